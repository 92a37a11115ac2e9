"""`sps eval` as a library call: load a model once, evaluate it on one or more benchmarks."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from sps.evaluation.report import combined_table
from sps.evaluation.runner import EvalSettings, run_eval
from sps.grading.rewards import DEFAULT_MEMORY_LIMIT_GIB, DEFAULT_TIMEOUT_S
from sps.io import atomic_write_text
from sps.tasks.benchmarks import FieldNames, load_benchmark


def make_engine(kind: str, model, tokenizer, model_path: str, batch_size: int, sleep: bool = False, dtype: str | None = None):
    """The rollout engine by name: 'hf' (samples with `model`) or 'vllm' (loads `model_path` into
    vLLM in `dtype` (default: the model's), then `model`'s weights when it is given; `model` may be
    None; `sleep`: vLLM frees its GPU memory between rollouts)."""
    if kind == "hf":
        from sps.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, batch_size=batch_size)
    if kind == "vllm":
        from sps.rollout.vllm_engine import VLLMEngine

        if model is None:
            return VLLMEngine(model_path, tokenizer)
        engine = VLLMEngine(model_path, tokenizer, dtype=dtype or str(model.dtype).removeprefix("torch."), sleep=sleep)
        engine.load_weights(model)  # the policy can differ from model_path (a resumed run)
        return engine
    raise ValueError(f"unknown engine {kind!r}; choose hf or vllm")


def evaluate_model(
    model_name: str,
    benchmark_specs: list[str],
    out: str | Path,
    base: EvalSettings,
    prompt_template: str | None = None,
    grader: str | None = None,
    data_dir: str | None = None,
    fields: FieldNames | None = None,
    engine: str = "hf",
    batch_size: int = 256,
    dtype: str = "auto",
    device: str | None = None,
    overwrite: bool = False,
    max_reward_failures: int = 0,
    reward_timeout: float = DEFAULT_TIMEOUT_S,
    reward_memory_limit: float = DEFAULT_MEMORY_LIMIT_GIB,
    regrade: bool = False,
    flag=lambda name: f"--{name}",
    plugins: list[str] = (),
) -> dict[str, dict]:
    """Evaluate one model on each benchmark; returns {benchmark name: metrics}.

    `base` carries the sampling settings; its benchmark, template and grader fields are filled in
    per benchmark. One benchmark writes into `out`; several write into out/<name>/ each, plus a
    combined table in out/summary.md. Started by torchrun, every process loads the model on its
    device and samples its share of the batches; the main process writes and returns the metrics,
    the others return {}. A folder whose samples came from another model, data or template is
    refused, and one scored by another reward too unless `regrade` scores them again (sps.identity);
    `flag(name)` writes an option as the caller would in those messages.
    """
    from sps.grading.rewards import RewardFunctions
    from sps.identity import data_identity, model_identity, reward_identity, template_identity
    from sps.models.loading import check_device, load_policy, load_tokenizer, resolve_model_path
    from sps.plugins import load_plugins
    from sps.training.distributed import init_world

    load_plugins(list(plugins))
    check_settings(base, batch_size)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder (the evaluation writes several files into it)")
    device = check_device(device)
    # Load every benchmark, the tokenizer and the rewards first: a typo in the last fails before any sampling.
    benchmarks = [load_benchmark(spec, data_dir, fields) for spec in benchmark_specs]
    for b in benchmarks:
        for message in b.skipped:
            print(f"warning: {b.name}: skipped malformed row: {message}")
    path = resolve_model_path(model_name)
    tokenizer = load_tokenizer(path)
    settings_of = {b.name: fitted_settings(base, b, prompt_template or b.template, grader or b.grader, tokenizer, path) for b in benchmarks}
    world = init_world(device)
    results, scorers = {}, {}
    try:
        for settings in settings_of.values():
            key = tuple(settings.rewards())
            if key not in scorers:
                scorers[key] = RewardFunctions(settings.rewards(), settings.reward_weights, settings.success_threshold,
                                               reward_timeout, memory_limit_gib=reward_memory_limit)
        for b in benchmarks:
            scorers[tuple(settings_of[b.name].rewards())].check_arguments(b.problems[0])
        model = None if engine == "vllm" else load_policy(model_name, dtype=dtype, device=device)[0]  # vLLM holds its own copy
        rollout = make_engine(engine, model, tokenizer, path, batch_size)
        model_digest = model_identity(path)
        for b in benchmarks:
            settings = settings_of[b.name]
            key = tuple(settings.rewards())
            folder = out if len(benchmarks) == 1 else out / b.name
            problems = b.problems[: settings.limit] if settings.limit else b.problems
            identity = {"model": model_digest, "data": data_identity(problems),
                        "template": template_identity(settings.prompt_template, tokenizer), "rewards": reward_identity(settings.rewards())}
            results[b.name] = run_eval(rollout, tokenizer, b, settings, folder, scorers[key], batch_size, overwrite,
                                       max_reward_failures=max_reward_failures, world=world, identity=identity,
                                       regrade=regrade, flag=flag)
    finally:
        for scorer in scorers.values():
            scorer.close()
    if not world.is_main:
        return {}
    if len(benchmarks) > 1:
        atomic_write_text(out / "summary.md", f"# {model_name}\n\n" + combined_table(results) + "\n")
    return results


DEFAULT_NEW_TOKENS = 1024  # at most: less where the model's context leaves less room after the prompts


def check_settings(settings: EvalSettings, batch_size: int) -> None:
    """The evaluation's own settings, each error naming its option."""
    checks = [
        (settings.n >= 1, f"--n must be >= 1 (got {settings.n})"),
        (settings.limit is None or settings.limit >= 0, f"--limit must be >= 1, or 0 for every problem (got {settings.limit})"),
        (batch_size >= 1, f"--batch-size must be >= 1 (got {batch_size})"),
        (settings.max_new_tokens is None or settings.max_new_tokens >= 1, f"--max-new-tokens must be >= 1 (got {settings.max_new_tokens})"),
        (math.isfinite(settings.temperature) and settings.temperature > 0, f"--temperature must be a finite number > 0 (got {settings.temperature})"),
        (0 < settings.top_p <= 1, f"--top-p must be in (0, 1] (1 switches it off; got {settings.top_p})"),
        (settings.top_k >= 0, f"--top-k must be >= 0 (0 switches it off; got {settings.top_k})"),
        (math.isfinite(settings.success_threshold), f"--success-threshold must be a finite number (got {settings.success_threshold})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def fitted_settings(base: EvalSettings, benchmark, template: str, grader: str, tokenizer, model_path: str) -> EvalSettings:
    """The benchmark's settings, its new tokens fitted to the model's context: by default at most
    DEFAULT_NEW_TOKENS and what the longest prompt leaves; a longer request is an error."""
    from transformers import AutoConfig

    from sps.models.lora import is_adapter_folder
    from sps.training.validate import longest_prompt

    limit = base.limit or None
    problems = benchmark.problems[:limit] if limit else benchmark.problems
    config_path = model_path
    if is_adapter_folder(model_path):
        import json

        config_path = json.loads((Path(model_path) / "adapter_config.json").read_text())["base_model_name_or_path"]
    context = getattr(AutoConfig.from_pretrained(config_path), "max_position_embeddings", None)
    sized = type(benchmark)(benchmark.name, problems, benchmark.grader, benchmark.template, benchmark.source)
    problem_id, longest = longest_prompt("--benchmark", sized, template, tokenizer, context)
    if context and longest >= context:
        raise ValueError(f"--benchmark: problem {problem_id!r} of {benchmark.name} takes {longest:,} prompt tokens, which leaves "
                         f"no room for a completion in the model's context of {context} tokens; leave it out (--limit, or a smaller file)")
    new_tokens = base.max_new_tokens or (min(DEFAULT_NEW_TOKENS, context - longest) if context else DEFAULT_NEW_TOKENS)
    if context and longest + new_tokens > context:
        raise ValueError(f"--max-new-tokens: {new_tokens} new tokens after problem {problem_id!r} of {benchmark.name} "
                         f"({longest} prompt tokens) are beyond the model's context of {context} tokens")
    return replace(base, benchmark=benchmark.source, prompt_template=template, grader=grader, max_new_tokens=new_tokens,
                   limit=limit)


def evaluate(
    model: str | Path,
    benchmark: str | list[str],
    output_dir: str | Path | None = None,
    *,
    n: int = 8,
    temperature: float = 0.7,
    top_p: float = 1.0,
    top_k: int = 0,
    max_completion_length: int | None = None,
    limit: int | None = None,
    prompt_template: str | None = None,
    grader: str | None = None,
    reward_funcs=(),
    reward_weights=(),
    success_threshold: float = 1.0,
    max_reward_failures: int = 0,
    reward_timeout: float = DEFAULT_TIMEOUT_S,
    reward_memory_limit: float = DEFAULT_MEMORY_LIMIT_GIB,
    seed: int = 0,
    batch_size: int = 256,
    engine: str = "hf",
    dtype: str = "auto",
    device: str | None = None,
    data_dir: str | None = None,
    id_field: str = "id",
    problem_field: str = "problem",
    answer_field: str = "answer",
    overwrite: bool = False,
    regrade: bool = False,
    plugins: list[str] = (),
    **aliases,
) -> dict:
    """`sps eval` from Python, with its options under the same names: sample n completions per
    problem, score them, and return the metrics (docs/evaluation.md lists them; Pass@k and Maj@k
    keyed by int k): one benchmark's dict, or {name: metrics} for several.

    model: a folder, a run folder (its newest checkpoint), a hub id or an alias; benchmark: a name,
    a JSON Lines path, hf:owner/name[:split], rg:<task>, or a list of them. reward_funcs: graders
    and functions (callables or "module:function" / "file.py:function"; one alone or a list), summed
    with reward_weights; max_completion_length: default at most 1024 and what the model's context
    leaves after the longest prompt; a sample is correct when its reward reaches success_threshold;
    reward_timeout (s) and reward_memory_limit (GiB) bound each reward-function call, as in sps train.
    Writes into `output_dir` (default out/eval/<model name>, or out/eval/<run>_<checkpoint> for a
    checkpoint folder) and, rerun, resumes there; regrade=True scores samples made before a change
    of the reward again. The names sps train and TRL use are accepted too: num_generations for n,
    max_new_tokens for max_completion_length, out for output_dir. Under torchrun every process
    samples its share and the main process returns the metrics (the others: {})."""
    from sps.grading.rewards import reward_spec
    from sps.tasks.benchmarks import split_specs

    given = {"n": n, "max_completion_length": max_completion_length, "output_dir": output_dir}
    for alias, value in aliases.items():
        name = EVAL_ALIASES.get(alias)
        if name is None:
            raise TypeError(f"evaluate() got an unexpected keyword argument {alias!r}")
        given[name] = value
    specs = split_specs(benchmark) if isinstance(benchmark, str) else list(benchmark)
    funcs = [reward_funcs] if callable(reward_funcs) or isinstance(reward_funcs, str) else list(reward_funcs)
    base = EvalSettings(
        model=str(model), benchmark="", n=given["n"], temperature=temperature, top_p=top_p, top_k=top_k,
        max_new_tokens=given["max_completion_length"], limit=limit, seed=seed, reward_funcs=[reward_spec(f) for f in funcs],
        reward_weights=list(reward_weights), success_threshold=success_threshold,
    )
    out = Path(given["output_dir"] or default_out_dir(model))
    results = evaluate_model(str(model), specs, out, base, prompt_template, grader, data_dir,
                             FieldNames(id_field, problem_field, answer_field), engine=engine,
                             batch_size=batch_size, dtype=dtype, device=device, overwrite=overwrite,
                             max_reward_failures=max_reward_failures, reward_timeout=reward_timeout,
                             reward_memory_limit=reward_memory_limit, regrade=regrade, flag=lambda name: f"{name}=True",
                             plugins=list(plugins))
    results = {name: keyed_by_int(m) for name, m in results.items()}
    return next(iter(results.values())) if len(specs) == 1 and results else results


# The other names of evaluate()'s options: sps train's and TRL's words for the same things.
EVAL_ALIASES = {"num_generations": "n", "max_new_tokens": "max_completion_length", "out": "output_dir"}


def keyed_by_int(metrics: dict) -> dict:
    """The metrics with their per-k tables keyed by int k (JSON keeps them as strings)."""
    return {key: {int(k): v for k, v in value.items()} if key.endswith("_at_k") or key.endswith("_at_k_ci") else value
            for key, value in metrics.items()}


def default_out_dir(model: str | Path) -> Path:
    """out/eval/<model name>; a checkpoint folder is named with its run (two runs' step_000040 do not collide)."""
    path = Path(str(model).rstrip("/"))
    name = f"{path.parent.parent.name}_{path.name}" if path.parent.name == "checkpoints" else path.name
    return Path("out") / "eval" / name

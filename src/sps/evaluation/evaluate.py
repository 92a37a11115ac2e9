"""`sps eval` as a library call: load a model once, evaluate it on one or more benchmarks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sps.evaluation.report import combined_table
from sps.evaluation.runner import EvalSettings, run_eval
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
) -> dict[str, dict]:
    """Evaluate one model on each benchmark; returns {benchmark name: metrics}.

    `base` carries the sampling settings; its benchmark, template and grader fields are filled in
    per benchmark. One benchmark writes into `out`; several write into out/<name>/ each, plus a
    combined table in out/summary.md.
    """
    from sps.grading.rewards import RewardFunctions
    from sps.models.loading import load_policy, load_tokenizer, resolve_model_path

    # Load every benchmark first, so a typo in the last one fails before any sampling.
    benchmarks = [load_benchmark(spec, data_dir, fields) for spec in benchmark_specs]
    for b in benchmarks:
        for message in b.skipped:
            print(f"warning: {b.name}: skipped malformed row: {message}")
    path = resolve_model_path(model_name)
    if engine == "vllm":  # vLLM holds its own copy of the weights
        model, tokenizer = None, load_tokenizer(path)
    else:
        model, tokenizer = load_policy(model_name, dtype=dtype, device=device)
    rollout = make_engine(engine, model, tokenizer, path, batch_size)
    out = Path(out)
    results, scorers = {}, {}
    try:
        for b in benchmarks:
            settings = replace(base, benchmark=b.source, prompt_template=prompt_template or b.template, grader=grader or b.grader)
            key = tuple(settings.rewards())
            if key not in scorers:
                scorers[key] = RewardFunctions(settings.rewards(), settings.reward_weights, settings.success_threshold)
            folder = out if len(benchmarks) == 1 else out / b.name
            results[b.name] = run_eval(rollout, tokenizer, b, settings, folder, scorers[key], batch_size, overwrite,
                                       max_reward_failures=max_reward_failures)
    finally:
        for scorer in scorers.values():
            scorer.close()
    if len(benchmarks) > 1:
        atomic_write_text(out / "summary.md", f"# {model_name}\n\n" + combined_table(results) + "\n")
    return results

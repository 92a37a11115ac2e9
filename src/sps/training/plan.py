"""`sps train --dry-run` and `sps eval --dry-run`: every check that can fail a run, before it starts.

Loads the tokenizer and the model's config (never its weights: the parameters are counted on the
meta device), reads the first rows of the data, checks every divisibility and length constraint,
estimates the peak GPU memory per process (sps.training.memory) and prints the plan: steps,
rollouts, tokens, evaluations, checkpoints, disk. Every problem is reported, each naming the
setting to change; any error makes the command exit non-zero.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from sps.training.config import TrainConfig
from sps.training.memory import (
    DTYPE_BYTES,
    GIB,
    Layout,
    count_parameters,
    peak_memory,
    rollout_memory,
    shape_of,
    training_memory,
)
from sps.training.optimize import MICRO_BATCH_ROWS

ROWS_READ = 64  # rows of the training data a dry run reads
ROWS_GRADED = 16  # rows of each data set whose gold answer is checked against the grader
VLLM_SHARE = 0.4  # the GPU share the vLLM engine reserves (sps.rollout.vllm_engine)
# A gold answer is usable when the grader accepts it written as a model would write it.
SELF_CHECKS = {"math": "so the answer is \\boxed{{{}}}", "choice": "The answer is \\boxed{{{}}}"}
# (grader, gold answer) -> accepted, so data checked again in the same process is not graded again.
ACCEPTED: dict[tuple[str, str], bool] = {}


@dataclass
class Plan:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: list = field(default_factory=list)  # (setting, spec, grader, problems) whose gold answers check_answers grades

    def text(self) -> str:
        out = list(self.lines)
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"error: {e}" for e in self.errors]
        verdict = f"{len(self.errors)} error(s): fix them before starting" if self.errors else "no errors"
        return "\n".join(out + [f"dry run: {verdict}, {len(self.warnings)} warning(s)"])


# The recipes' models as their config.json on the hub describes them, for a dry run without the hub.
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-Math-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                   num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True),
    "Qwen/Qwen2.5-Math-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=4096, tie_word_embeddings=False),
}
CHARS_PER_TOKEN = 3.0  # a cautious guess for math text when the real tokenizer is out of reach


class CharacterEstimate:
    """Stands in for a tokenizer that cannot be loaded: about one token per CHARS_PER_TOKEN characters."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True):
        return type("Encoding", (), {"input_ids": [0] * math.ceil(len(text) / CHARS_PER_TOKEN)})


def model_files(name: str, plan: Plan):
    """(config, tokenizer) of a model folder, hub id, alias or the testbed, without any weights.
    Offline, a model of KNOWN_SHAPES is sized from its known shape and its prompts from their length."""
    from transformers import AutoConfig, Qwen2Config

    from sps.models.loading import load_tokenizer, resolve_model_path

    if name in KNOWN_SHAPES:
        try:
            return AutoConfig.from_pretrained(name), load_tokenizer(name)
        except OSError as e:
            plan.warnings.append(
                f"model: {name} is out of reach ({str(e).splitlines()[0]}): sized from its known shape, and prompt "
                f"lengths estimated at {CHARS_PER_TOKEN:g} characters a token"
            )
            return Qwen2Config(**KNOWN_SHAPES[name]), CharacterEstimate()

    if name == "testbed":
        from sps.models.testbed import TestbedConfig, default_testbed_dir, testbed_model_config
        from sps.models.tokenizer import build_char_tokenizer
        from sps.tasks.countdown import ALPHABET

        folder = default_testbed_dir(TestbedConfig())
        if not (folder / "config.json").is_file():
            plan.lines.append("model: the testbed is not built yet; the run builds it first (about 4 minutes on 2 CPU cores)")
            tokenizer = build_char_tokenizer(ALPHABET)
            return testbed_model_config(TestbedConfig(), tokenizer), tokenizer
        name = str(folder)
    path = resolve_model_path(name)
    return AutoConfig.from_pretrained(path), load_tokenizer(path)


def check_data(plan: Plan, setting: str, spec: str, data_dir: str, tokenizer, template: str, grader: str, limit: int | None):
    """Read `spec` (its first `limit` rows) and check columns, answers and prompts; returns
    (benchmark, prompt lengths in tokens) or (None, []) after reporting an error."""
    from sps.tasks.benchmarks import load_benchmark
    from sps.tasks.templates import encode_prompt

    try:
        bench = load_benchmark(spec, data_dir or None, limit=limit)
    except (ValueError, FileNotFoundError) as e:
        plan.errors.append(f"{setting}: {e}")
        return None, []
    read = len(bench.problems) + len(bench.skipped)
    if bench.skipped:
        plan.warnings.append(f"{setting}: {len(bench.skipped)} of the {read} rows read are malformed and left out; first: {bench.skipped[0]}")
    template = template or bench.template
    try:
        lengths = [len(encode_prompt(template, p.problem, tokenizer)) for p in bench.problems]
    except ValueError as e:
        plan.errors.append(f"prompt_template: {e}")
        return None, []
    grader = grader or bench.grader
    if grader in SELF_CHECKS:
        plan.answers.append((setting, spec, grader, bench.problems[:ROWS_GRADED]))
    scope = f"first {read} rows" if limit is not None else f"{read} rows"
    plan.lines.append(
        f"{setting}: {bench.source} ({scope}), grader {grader}, template {template}; "
        f"prompts {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f})"
    )
    return bench, lengths


def check_answers(plan: Plan) -> None:
    """Grade each data set's first gold answers, written as a model would write them, with its
    grader: an answer the grader does not accept can never earn a reward. One grader per name,
    since starting a math grader's worker processes takes seconds."""
    from sps.grading.registry import get_grader

    for grader in dict.fromkeys(g for _, _, g, _ in plan.answers):
        sets = [(setting, spec, problems) for setting, spec, g, problems in plan.answers if g == grader]
        new = list({p.answer: p for _, _, ps in sets for p in ps if (grader, p.answer) not in ACCEPTED}.values())
        if new:
            instance = get_grader(grader)
            try:
                grades = instance.grade([SELF_CHECKS[grader].format(p.answer) for p in new], new)
            finally:
                instance.close()
            ACCEPTED.update({(grader, p.answer): g.correct for p, g in zip(new, grades)})
        for setting, spec, checked in sets:
            bad = [p for p in checked if not ACCEPTED[grader, p.answer]]
            if bad:
                message = (
                    f"{setting}: {len(bad)} of the first {len(checked)} gold answers of {spec} are not recognised by the "
                    f"{grader!r} grader (e.g. {bad[0].id}: {bad[0].answer[:60]!r}); check the answer column or the grader setting"
                )
                (plan.errors if 2 * len(bad) > len(checked) else plan.warnings).append(message)


def check_context(plan: Plan, setting: str, spec: str, prompt_tokens: int, new_tokens: int, context: int) -> None:
    if prompt_tokens + new_tokens > context:
        plan.errors.append(
            f"{setting}: {new_tokens} new tokens after the longest prompt of {spec} ({prompt_tokens} tokens) "
            f"make {prompt_tokens + new_tokens}, beyond the model's context of {context} (max_position_embeddings)"
        )


def parameters(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"


def visible_gpu_memory() -> float | None:
    import torch

    return float(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None


def memory_lines(plan: Plan, parts: dict[str, float], peak: float, gpu: float | None, advice: str) -> None:
    shown = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items() if v)
    plan.lines.append(f"memory per process (GiB, estimated): {shown}; peak {peak / GIB:.1f}")
    if gpu is None:
        plan.lines.append("memory: no GPU visible and no --gpu-memory given, so the fit is not checked")
    elif peak > gpu:
        plan.warnings.append(f"the estimated peak of {peak / GIB:.1f} GiB per process does not fit the GPU's {gpu / GIB:.0f} GiB: {advice}")
    else:
        plan.lines.append(f"memory: fits the GPU's {gpu / GIB:.0f} GiB ({peak / gpu:.0%})")


def train_plan(cfg: TrainConfig, layout: Layout | None = None, gpu_memory: float | None = None) -> Plan:
    """The dry run of `sps train`: checks and the plan of the run `cfg` describes."""
    from sps.tasks.benchmarks import split_specs
    from sps.training.run import validate
    from sps.training.sps_phase import step_phase

    plan = Plan()
    layout = layout or Layout(processes=int(os.environ.get("WORLD_SIZE", "1")))
    try:
        validate(cfg)
    except ValueError as e:
        plan.errors.append(str(e))
    try:
        config, tokenizer = model_files(cfg.model, plan)
    except (OSError, ValueError) as e:
        plan.errors.append(f"model: could not load the config and tokenizer of {cfg.model!r}: {e}")
        return plan
    shape = shape_of(config, count_parameters(config))
    dtype = "bfloat16" if cfg.dtype == "auto" else cfg.dtype
    plan.lines.append(
        f"model: {cfg.model}, {parameters(shape.params)} parameters, {shape.layers} layers, hidden {shape.hidden}, "
        f"vocab {shape.vocab}, context {shape.context}; {dtype} ({'auto = bf16 on a GPU' if cfg.dtype == 'auto' else 'as set'})"
    )

    # Data: the training prompts and every evaluation benchmark.
    train, lengths = check_data(plan, "train_data", cfg.train_data, cfg.data_dir, tokenizer, cfg.prompt_template, cfg.grader, ROWS_READ)
    longest = max(lengths, default=0)
    check_context(plan, "max_completion_length", cfg.train_data, longest, cfg.max_completion_length, shape.context)
    whole_set_read = train is not None and len(train.problems) < ROWS_READ
    if whole_set_read and cfg.prompt_mode == "fixed" and cfg.train_size > len(train.problems):
        plan.errors.append(f"train_size: {cfg.train_size} is more than the {len(train.problems)} problems of {cfg.train_data}")
    pool = cfg.train_size if cfg.prompt_mode == "fixed" and cfg.train_size else None
    if pool is not None and cfg.prompts_per_step > pool:
        plan.errors.append(f"prompts_per_step: {cfg.prompts_per_step} is more than the train_size of {pool} prompts")
    eval_samples = 0
    specs = split_specs(cfg.eval_benchmark) if cfg.eval_every >= 0 else []
    for spec in specs:
        bench, eval_lengths = check_data(plan, "eval_benchmark", spec, cfg.data_dir, tokenizer, cfg.prompt_template, cfg.grader, None)
        if bench is not None:
            check_context(plan, "max_completion_length", spec, max(eval_lengths), cfg.max_completion_length, shape.context)
            eval_samples += min(cfg.eval_limit or len(bench.problems), len(bench.problems)) * cfg.eval_n

    check_answers(plan)

    # Divisibility.
    rollouts = cfg.prompts_per_step * cfg.num_generations
    if cfg.prompts_per_step % layout.processes:
        plan.errors.append(f"prompts_per_step: {cfg.prompts_per_step} does not divide by the {layout.processes} processes")
    if rollouts % cfg.steps_per_generation:
        plan.errors.append(
            f"steps_per_generation: the {rollouts} rollouts of a step (prompts_per_step x num_generations) do not split "
            f"into {cfg.steps_per_generation} equal minibatches"
        )
    minibatch = max(rollouts // max(cfg.steps_per_generation, 1) // layout.processes, 1)
    micro = min(cfg.micro_batch_size or MICRO_BATCH_ROWS, minibatch)
    if minibatch % micro:
        plan.warnings.append(f"micro_batch_size: {micro} does not divide the {minibatch} rows of a minibatch per process; the last micro-batch is smaller")

    # The run.
    phases = [step_phase(cfg.sps, s, {}) for s in range(1, cfg.max_steps + 1)] if cfg.algorithm == "sps" else ["rl"] * cfg.max_steps
    counts = ", ".join(f"{phases.count(p)} {p}" for p in dict.fromkeys(phases))
    if cfg.algorithm == "sps" and cfg.sps.schedule == "trigger":
        counts = "IRL steps depend on the batch statistic (trigger)"
    plan.lines.append(
        f"steps: {cfg.max_steps} ({counts}); each {cfg.prompts_per_step} prompts x {cfg.num_generations} = {rollouts} rollouts "
        f"({rollouts // layout.processes} per process on {layout.processes}), {cfg.num_iterations} epoch(s) x "
        f"{cfg.steps_per_generation} minibatches of {minibatch} rows per process, micro-batches of {micro}"
    )
    mean_prompt = sum(lengths) / len(lengths) if lengths else 0
    plan.lines.append(
        f"rollouts: {cfg.max_steps * rollouts:,} in all; at most {cfg.max_steps * rollouts * cfg.max_completion_length / 1e6:,.1f}M "
        f"completion tokens (max_completion_length {cfg.max_completion_length}) and about "
        f"{cfg.max_steps * rollouts * mean_prompt / 1e6:,.1f}M prompt tokens"
    )
    evals = 0
    if cfg.eval_every >= 0:
        evals = 1 + (cfg.max_steps // cfg.eval_every if cfg.eval_every > 0 else 0) + (cfg.eval_every <= 0 or cfg.max_steps % cfg.eval_every != 0)
        plan.lines.append(
            f"evaluations: {evals} (step 0, every {cfg.eval_every or '-'} steps and the last) on {cfg.eval_benchmark}, "
            f"{eval_samples:,} samples each at temperature {cfg.eval_temperature} (at most {eval_samples * cfg.max_completion_length / 1e6:,.1f}M tokens)"
        )
    b = DTYPE_BYTES[dtype]
    checkpoint = shape.params * b * 3  # the weights plus AdamW's two moments in trainer_state.pt
    saved = cfg.max_steps // cfg.save_every + (cfg.max_steps % cfg.save_every != 0)
    kept = min(saved, cfg.keep_checkpoints) if cfg.keep_checkpoints > 0 else saved
    best = shape.params * b if cfg.keep_best and evals else 0
    samples_disk = evals * eval_samples * (cfg.max_completion_length * 4 + 300)  # ~4 characters a token, plus the row's fields
    plan.lines.append(
        f"checkpoints: {saved} saved (every {cfg.save_every} steps and the last), {kept} kept, {checkpoint / GIB:.1f} GiB each"
        + (f"; the best by Avg@n kept apart ({best / GIB:.1f} GiB)" if best else "")
    )
    plan.lines.append(f"disk: about {(kept * checkpoint + best + samples_disk) / GIB:.1f} GiB in {cfg.output_dir}")

    # Memory.
    layout_text = f"{layout.processes} process(es)" + (", parameters sharded" if layout.shard_params else "") + (
        ", optimizer sharded" if layout.shard_optimizer else ""
    )
    train_parts = training_memory(shape, dtype, micro, longest, cfg.max_completion_length, layout, reference=cfg.beta > 0)
    gpu = gpu_memory or visible_gpu_memory()
    sequences = min(cfg.generation_batch_size, rollouts // layout.processes)
    rollout_parts = rollout_memory(shape, dtype, sequences, longest, cfg.max_completion_length) if cfg.engine == "hf" else None
    reserve = VLLM_SHARE * gpu if cfg.engine == "vllm" and gpu else 0.0
    if cfg.engine == "vllm" and not gpu:
        plan.warnings.append("engine: vllm reserves 40% of the GPU; give --gpu-memory to include it in the estimate")
    parts = {**train_parts, **(rollout_parts or {}), **({"vllm_reserve": reserve} if reserve else {})}
    plan.lines.append(f"layout: {layout_text}; engine {cfg.engine}, {sequences} sequences sampled together")
    advice = (
        f"lower micro_batch_size (now {micro}), generation_batch_size (now {cfg.generation_batch_size}) or "
        "max_completion_length, or spread the run over more processes with sharding"
    )
    memory_lines(plan, parts, peak_memory(train_parts, rollout_parts, reserve), gpu, advice)
    return plan


def eval_plan(
    model: str, specs: list[str], n: int, max_new_tokens: int, batch_size: int, dtype: str = "auto",
    data_dir: str | None = None, prompt_template: str | None = None, grader: str | None = None,
    limit: int | None = None, gpu_memory: float | None = None,
) -> Plan:
    """The dry run of `sps eval`: model, benchmarks, lengths, samples and the sampling memory."""
    plan = Plan()
    try:
        config, tokenizer = model_files(model, plan)
    except (OSError, ValueError) as e:
        plan.errors.append(f"--model: could not load the config and tokenizer of {model!r}: {e}")
        return plan
    shape = shape_of(config, count_parameters(config))
    dtype = "bfloat16" if dtype == "auto" else dtype
    plan.lines.append(f"model: {model}, {parameters(shape.params)} parameters, context {shape.context}; {dtype}")
    samples, longest = 0, 0
    for spec in specs:
        bench, lengths = check_data(plan, "--benchmark", spec, data_dir or "", tokenizer, prompt_template or "", grader or "", None)
        if bench is None:
            continue
        longest = max(longest, max(lengths))
        check_context(plan, "--max-new-tokens", spec, max(lengths), max_new_tokens, shape.context)
        problems = min(limit or len(bench.problems), len(bench.problems))
        samples += problems * n
        plan.lines.append(f"{bench.name}: {problems} problems x n {n} = {problems * n:,} samples")
    check_answers(plan)
    plan.lines.append(f"samples: {samples:,} in all, at most {samples * max_new_tokens / 1e6:,.1f}M new tokens")
    weights = shape.params * DTYPE_BYTES[dtype]
    sampling = rollout_memory(shape, dtype, batch_size, longest, max_new_tokens)
    memory_lines(
        plan, {"weights": weights, **sampling}, weights + sum(sampling.values()), gpu_memory or visible_gpu_memory(),
        f"lower --batch-size (now {batch_size})",
    )
    return plan


def exit_code(plan: Plan) -> int:
    return 1 if plan.errors else 0


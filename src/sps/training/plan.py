"""`sps train --dry-run`: every check that can fail a training run, before it starts, and its plan:
steps, rollouts, tokens, evaluations, checkpoints, disk and memory (the checks: sps.preflight)."""

from __future__ import annotations

import os

from sps.preflight import (
    Plan,
    check_answers,
    check_context,
    check_data,
    memory_lines,
    model_files,
    parameters,
    visible_gpu_memory,
)
from sps.training.config import TrainConfig
from sps.training.memory import (
    DTYPE_BYTES,
    GIB,
    Layout,
    count_parameters,
    lora_parameters,
    peak_memory,
    rollout_memory,
    shape_of,
    training_memory,
)
from sps.training.optimize import MICRO_BATCH_ROWS

ROWS_READ = 64  # rows of the training data a dry run reads
VLLM_SHARE = 0.4  # the GPU share the vLLM engine reserves (sps.rollout.vllm_engine)


def train_plan(cfg: TrainConfig, layout: Layout | None = None, gpu_memory: float | None = None) -> Plan:
    """The dry run of `sps train`: checks and the plan of the run `cfg` describes."""
    from sps.plugins import load_plugins
    from sps.tasks.benchmarks import split_specs
    from sps.training.sps_phase import step_phase
    from sps.training.validate import check_world, validate, with_presets

    plan = Plan()
    layout = layout or Layout(processes=int(os.environ.get("WORLD_SIZE", "1")))
    load_plugins(cfg.plugins)
    cfg, applied = with_presets(cfg)
    plan.lines += [f"preset: {line}" for line in applied]
    try:
        validate(cfg)
    except ValueError as e:
        plan.errors.append(str(e).removeprefix("config: "))
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
    try:
        check_world(cfg, layout.processes)
    except ValueError as e:
        plan.errors.append(str(e).removeprefix("config: "))
    minibatch = max(rollouts // max(cfg.steps_per_generation, 1) // layout.processes, 1)
    micro = min(cfg.micro_batch_size or (minibatch if cfg.max_tokens_per_microbatch else MICRO_BATCH_ROWS), minibatch)
    if cfg.max_tokens_per_microbatch:  # memory is set by the micro-batch of the longest rows
        micro = min(micro, max(1, cfg.max_tokens_per_microbatch // (longest + cfg.max_completion_length)))
    elif minibatch % micro:
        plan.warnings.append(f"micro_batch_size: {micro} does not divide the {minibatch} rows of a minibatch per process; the last micro-batch is smaller")

    # The run.
    phases = [step_phase(cfg, s, {}).name for s in range(1, cfg.max_steps + 1)]
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
    adapters = lora_parameters(shape, cfg.peft.r, cfg.peft.target_modules) if cfg.peft.r else 0
    if adapters:
        plan.lines.append(f"LoRA: rank {cfg.peft.r} on {', '.join(cfg.peft.target_modules or ['peft default'])}, "
                          f"{parameters(adapters)} trainable parameters ({adapters / shape.params:.2%} of the model)")
    train_parts = training_memory(shape, dtype, micro, longest, cfg.max_completion_length, layout, reference=cfg.beta > 0,
                                  chunk_logits=cfg.logits_chunk_size >= 0, chunk_size=cfg.logits_chunk_size, adapter_params=adapters)
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

"""The settings check every training run passes before any work starts."""

from __future__ import annotations

import math
import re
from pathlib import Path

from sps.algorithms.advantages import ADVANTAGE_ESTIMATORS, OUTCOME_BONUSES, SCALINGS
from sps.algorithms.losses import AGGREGATIONS
from sps.algorithms.policy_losses import POLICY_LOSSES
from sps.tasks.prompts import MODES
from sps.training.config import TrainConfig
from sps.training.distributed import PARALLELISMS
from sps.training.sps_phase import validate_sps

MAX_LEARNING_RATE = 1.0
DEVICE = re.compile(r"|cpu|cuda(:\d+)?|mps")


def with_presets(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """cfg with the chosen policy loss's preset (its authors' general settings) on the settings it
    leaves at their defaults, and a line for each one applied; cfg as it is with author_settings off."""
    import dataclasses

    loss = POLICY_LOSSES.get(cfg.loss_mode)
    if not cfg.author_settings or loss is None:
        return cfg, []
    defaults, applied = TrainConfig(), []
    for key, value in loss.preset.items():
        if getattr(cfg, key) == getattr(defaults, key) != value:
            cfg = dataclasses.replace(cfg, **{key: value})
            applied.append(f"loss_mode {cfg.loss_mode}: {key} {value!r}, its authors' setting (author_settings false keeps the default)")
    return cfg, applied


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first inconsistent setting, before any work starts."""
    a = cfg.advantage
    checks = [
        (bool(cfg.model), "model is required (a folder, hub id, smollm2-135m-instruct or testbed)"),
        (cfg.algorithm in ("grpo", "sps"), "algorithm must be grpo or sps"),
        (cfg.loss_type in AGGREGATIONS, f"loss_type must be one of {', '.join(AGGREGATIONS)}"),
        (cfg.scale_rewards in SCALINGS, f"scale_rewards must be one of {', '.join(SCALINGS)}"),
        (cfg.advantage_estimator in ADVANTAGE_ESTIMATORS, f"advantage_estimator must be one of {', '.join(ADVANTAGE_ESTIMATORS)}"),
        (cfg.prompt_mode in MODES, f"prompt_mode must be one of {', '.join(MODES)}"),
        (cfg.loss_mode in POLICY_LOSSES, f"loss_mode must be one of {', '.join(POLICY_LOSSES)}"),
        (cfg.advantage_estimator not in ("passk", "pkpo") or min(a.k, a.k_final) >= 1 and max(a.k, a.k_final) <= cfg.num_generations,
         f"advantage.k and advantage.k_final must be between 1 and num_generations (got k = {a.k}, k_final = {a.k_final}, G = {cfg.num_generations})"),
        (cfg.advantage_estimator != "grpo_passk" or cfg.scale_rewards in ("group", "none"), "grpo_passk takes scale_rewards group (divide by the std) or none"),
        (min(a.focal_gamma, a.rank_penalty, a.positive_weight) >= 0, "advantage.focal_gamma, rank_penalty and positive_weight must be >= 0"),
        (a.outcome_bonus in OUTCOME_BONUSES and a.outcome_bonus_coef >= 0, f"advantage.outcome_bonus must be one of {', '.join(OUTCOME_BONUSES)} and outcome_bonus_coef >= 0"),
        (0 < cfg.policy_loss.top_entropy_quantile <= 1 and 0 <= cfg.policy_loss.archer_entropy_quantile <= 1,
         "policy_loss.top_entropy_quantile must be in (0, 1] and archer_entropy_quantile in [0, 1]"),
        (cfg.policy_loss.flowrl_head_layers >= 1 and cfg.policy_loss.flowrl_beta >= 0, "policy_loss.flowrl_head_layers must be >= 1 and flowrl_beta >= 0"),
        (cfg.policy_loss.simko_top_k >= 1 and 0 <= cfg.policy_loss.simko_entropy_quantile <= 1, "policy_loss.simko_top_k must be >= 1 and simko_entropy_quantile in [0, 1]"),
        (cfg.adaptive_entropy.delta >= 0 and cfg.adaptive_entropy.coef_min <= cfg.adaptive_entropy.coef_max, "adaptive_entropy.delta must be >= 0 and coef_min <= coef_max"),
        (cfg.num_generations >= 2, "num_generations must be >= 2 (advantages compare completions of a prompt)"),
        (cfg.prompts_per_step >= 1, "prompts_per_step must be >= 1"),
        (cfg.max_completion_length >= 1, "max_completion_length must be >= 1"),
        (math.isfinite(cfg.temperature) and cfg.temperature > 0, f"temperature must be a finite number > 0 (got {cfg.temperature})"),
        (0 < cfg.top_p <= 1, f"top_p must be in (0, 1] (1 switches it off; got {cfg.top_p})"),
        (math.isfinite(cfg.learning_rate) and 0 < cfg.learning_rate <= MAX_LEARNING_RATE,
         f"learning_rate must be a finite number in (0, {MAX_LEARNING_RATE:g}] (got {cfg.learning_rate:g}); AdamW's steps are about learning_rate per weight"),
        (cfg.epsilon > 0 and cfg.epsilon_high >= 0, "epsilon must be > 0 and epsilon_high >= 0"),
        (cfg.beta >= 0 and cfg.entropy_coef >= 0, "beta and entropy_coef must be >= 0"),
        (cfg.num_iterations >= 1, "num_iterations must be >= 1"),
        (cfg.steps_per_generation >= 1, "steps_per_generation must be >= 1"),
        ((cfg.prompts_per_step * cfg.num_generations) % cfg.steps_per_generation == 0,
         f"steps_per_generation ({cfg.steps_per_generation}) must divide the {cfg.prompts_per_step * cfg.num_generations} rollouts of a step (prompts_per_step x num_generations) into equal minibatches"),
        (cfg.generation_batch_size >= 1, "generation_batch_size must be >= 1"),
        (cfg.keep_checkpoints >= 0 and cfg.max_nonfinite_steps >= 1, "keep_checkpoints must be >= 0 (0 keeps all) and max_nonfinite_steps >= 1"),
        (cfg.threads >= 0, f"threads must be >= 0 (0 = torch's default; got {cfg.threads})"),
        (DEVICE.fullmatch(cfg.device) is not None, f"device must be cpu, cuda, cuda:N or mps (empty: cuda when available; got {cfg.device!r})"),
        (cfg.success_threshold == cfg.success_threshold and cfg.max_reward_failures >= 0 and cfg.reward_timeout > 0,
         "success_threshold must be a number, max_reward_failures >= 0 and reward_timeout > 0"),
        (math.isfinite(cfg.reward_memory_limit) and cfg.reward_memory_limit > 0,
         f"reward_memory_limit must be a positive number of GiB (got {cfg.reward_memory_limit})"),
        (not Path(cfg.output_dir).exists() or Path(cfg.output_dir).is_dir(), f"output_dir {cfg.output_dir} exists and is not a folder"),
        (cfg.peft.r >= 0 and cfg.peft.lora_alpha > 0 and 0 <= cfg.peft.lora_dropout < 1, "peft.r must be >= 0, lora_alpha > 0 and lora_dropout in [0, 1)"),
        (cfg.micro_batch_size >= 0 and cfg.max_tokens_per_microbatch >= 0, "micro_batch_size and max_tokens_per_microbatch must be >= 0"),
        (cfg.logits_chunk_size >= -1, "logits_chunk_size must be >= 1, 0 (automatic) or -1 (whole logits)"),
        (cfg.max_steps >= 1 and cfg.save_every >= 1, "max_steps and save_every must be >= 1"),
        (cfg.eval_n >= 1 and cfg.eval_limit >= 0, "eval_n must be >= 1 and eval_limit >= 0"),
        (not cfg.replay_buffer or cfg.algorithm == "grpo", "replay_buffer is a GRPO control; use it with algorithm grpo"),
        (set(cfg.report_to) <= {"tensorboard", "wandb", "jsonl"}, "report_to takes tensorboard and wandb (the JSON Lines log is always written)"),
        (cfg.parallelism in PARALLELISMS, f"parallelism must be one of {', '.join(PARALLELISMS)}"),
        (cfg.dtype in ("auto", "float32", "bfloat16", "float16"), "dtype must be auto, float32, bfloat16 or float16"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"config: {message}")
    validate_sps(cfg.sps)


def check_world(cfg: TrainConfig, processes: int) -> None:
    """The settings that depend on how many processes share the run."""
    if cfg.prompts_per_step % processes:
        raise ValueError(f"config: prompts_per_step ({cfg.prompts_per_step}) must divide by the {processes} processes, "
                         "or some prompts would be dropped")
    if cfg.replay_buffer and processes > 1:
        raise ValueError("config: replay_buffer runs in a single process (its replayed rows differ in number between processes)")
    if cfg.algorithm == "sps" and cfg.sps.demo_weighting == "adversarial" and processes > 1:
        raise ValueError("config: sps.demo_weighting adversarial runs in a single process (each process would train its own discriminator)")


def check_inputs(cfg: TrainConfig, model_path: str, tokenizer, train_data, eval_benchmarks: list) -> None:
    """What the model, tokenizer and data must satisfy, checked before anything is written: every
    prompt plus max_completion_length fits the model's context (a problem far too large for it is
    named, not tokenised into an out-of-memory)."""
    from transformers import AutoConfig

    from sps.models.lora import is_adapter_folder

    check_sizes(cfg, train_data)
    if is_adapter_folder(model_path):
        return  # resumed LoRA folders are checked through their base at the start
    model_config = AutoConfig.from_pretrained(model_path)
    if cfg.peft.r and cfg.peft.target_modules:
        check_target_modules(cfg.peft.target_modules, model_config)
    context = getattr(model_config, "max_position_embeddings", None)
    benchmarks = [("train_data", train_data)] + [("eval_benchmark", b) for b in eval_benchmarks]
    for setting, benchmark in benchmarks:
        template = cfg.prompt_template or benchmark.template
        longest = longest_prompt(setting, benchmark, template, tokenizer, context)
        if context and longest[1] + cfg.max_completion_length > context:
            raise ValueError(
                f"{setting}: problem {longest[0]!r} of {benchmark.name} takes {longest[1]:,} prompt tokens; with "
                f"max_completion_length {cfg.max_completion_length} that is beyond the model's context of {context} tokens"
            )


def check_sizes(cfg: TrainConfig, train_data) -> None:
    """The training set against the sizes that draw from it, each error naming the option to change."""
    count, where = len(train_data.problems), f"the {len(train_data.problems)} problems in {train_data.source}"
    if count == 0:
        raise ValueError(f"train_data: {train_data.source} holds no problems")
    if cfg.prompt_mode == "fixed" and cfg.train_size > count:
        raise ValueError(f"train_size {cfg.train_size} is more than {where}: set train_size <= {count}, or 0 for all of them")
    pool = min(cfg.train_size, count) if cfg.prompt_mode == "fixed" and cfg.train_size else count
    if cfg.prompts_per_step > pool:
        raise ValueError(f"prompts_per_step {cfg.prompts_per_step} is more than the {pool} problems "
                         f"{'of the fixed set (train_size)' if pool < count else 'in ' + train_data.source}: set prompts_per_step <= {pool}")


def check_target_modules(targets: list[str], model_config) -> None:
    """Every LoRA target names a module of the model (built on the meta device: no weights, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"peft.target_modules: the model has no module named {', '.join(map(repr, missing))}; "
                         f"its linear layers are {', '.join(linear)}")


def longest_prompt(setting: str, benchmark, template: str, tokenizer, context: int | None) -> tuple[str, int]:
    """(id, tokens) of the benchmark's longest prompt. A statement with more characters than 64
    times the context cannot fit whatever its tokens: it is named at once rather than tokenised."""
    from sps.tasks.templates import encode_prompt

    best = ("", 0)
    for problem in benchmark.problems:
        if context and len(problem.problem) > 64 * context:
            raise ValueError(f"{setting}: problem {problem.id!r} of {benchmark.name} has {len(problem.problem):,} characters, "
                             f"far beyond the model's context of {context} tokens")
        tokens = len(encode_prompt(template, problem.problem, tokenizer))
        if tokens > best[1]:
            best = (problem.id, tokens)
    return best

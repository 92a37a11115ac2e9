"""The settings check every training run passes before any work starts."""

from __future__ import annotations

from sps.algorithms.advantages import ADVANTAGE_ESTIMATORS, SCALINGS
from sps.algorithms.losses import AGGREGATIONS
from sps.algorithms.policy_losses import POLICY_LOSSES
from sps.tasks.prompts import MODES
from sps.training.config import TrainConfig
from sps.training.distributed import PARALLELISMS
from sps.training.sps_phase import validate_sps


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
        (cfg.policy_loss.simko_top_k >= 1 and 0 <= cfg.policy_loss.simko_entropy_quantile <= 1, "policy_loss.simko_top_k must be >= 1 and simko_entropy_quantile in [0, 1]"),
        (cfg.adaptive_entropy.delta >= 0 and cfg.adaptive_entropy.coef_min <= cfg.adaptive_entropy.coef_max, "adaptive_entropy.delta must be >= 0 and coef_min <= coef_max"),
        (cfg.num_generations >= 2, "num_generations must be >= 2 (advantages compare completions of a prompt)"),
        (cfg.prompts_per_step >= 1, "prompts_per_step must be >= 1"),
        (cfg.max_completion_length >= 1, "max_completion_length must be >= 1"),
        (cfg.temperature > 0, "temperature must be > 0"),
        (cfg.learning_rate > 0, "learning_rate must be > 0"),
        (cfg.epsilon > 0 and cfg.epsilon_high >= 0, "epsilon must be > 0 and epsilon_high >= 0"),
        (cfg.beta >= 0 and cfg.entropy_coef >= 0, "beta and entropy_coef must be >= 0"),
        (cfg.num_iterations >= 1, "num_iterations must be >= 1"),
        (cfg.steps_per_generation >= 1, "steps_per_generation must be >= 1"),
        (cfg.steps_per_generation <= cfg.prompts_per_step * cfg.num_generations, "steps_per_generation cannot exceed the rollouts per step"),
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

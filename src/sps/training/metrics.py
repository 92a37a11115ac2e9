"""A step's rollout statistics, from its gathered rollouts (sps.training.rollouts)."""

from __future__ import annotations

import numpy as np

from sps.algorithms.advantages import fill_unscored, zero_std_fraction
from sps.evaluation.metrics import solved_diversity
from sps.grading.base import STATUSES
from sps.training.rollouts import Gathered


def rollout_metrics(rollouts: Gathered, group_size: int) -> dict[str, float]:
    """Rewards (of the scored rollouts), lengths, entropy, likelihoods and the squeezing metrics (distinct correct completions
    per prompt and top-1 share) of the step's rollouts over all processes."""
    lengths, logps = rollouts.lengths.float(), rollouts.mean_logps.flatten()
    unscored = rollouts.rewards.isnan()
    scored = rollouts.rewards[~unscored]  # an unscored rollout (a failed reward or grader) has no reward
    correct = rollouts.success.flatten()
    metrics = {
        "reward": float(scored.mean()) if len(scored) else float("nan"),
        "reward_std": float(scored.std()) if len(scored) > 1 else float("nan"),
        "reward/unscored_fraction": float(unscored.float().mean()),
        "frac_reward_zero_std": zero_std_fraction(fill_unscored(rollouts.rewards)),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/truncated_fraction": float(np.mean(rollouts.truncated)),
        "logp/correct": float(logps[correct].mean()) if correct.any() else float("nan"),
        "logp/incorrect": float(logps[~correct].mean()) if (~correct).any() else float("nan"),
    }
    if None not in rollouts.entropy_sums:
        metrics["entropy"] = sum(rollouts.entropy_sums) / max(float(lengths.sum()), 1.0)
    groups = lambda xs: [xs[i : i + group_size] for i in range(0, len(xs), group_size)]  # noqa: E731
    diversity = solved_diversity(groups(rollouts.texts), groups(rollouts.extracted), rollouts.success.numpy())
    metrics["distinct_correct_per_prompt"] = diversity["distinct_correct_per_solved"] or 0.0
    metrics["distinct_answers_per_prompt"] = diversity["distinct_answers_per_solved"] or 0.0
    metrics["top1_share"] = diversity["top1_share"] if diversity["top1_share"] is not None else float("nan")
    metrics["solved_fraction"] = float(rollouts.success.any(-1).float().mean())
    for status in (s for s in STATUSES if s != "ok"):  # every step logs each, 0 included, so a key never goes missing
        metrics[f"grading/{status}_fraction"] = rollouts.statuses.count(status) / len(rollouts.statuses)
    return metrics

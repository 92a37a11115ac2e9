"""Runtime guards: a run that cannot learn says so while it runs, naming the setting to change.

Two failures waste a run silently: completions cut at max_completion_length (the answer never
gets written, so the reward is 0), and groups whose G rollouts all earn the same reward (their
advantages are 0, so they teach nothing). Each guard watches one per-step metric and speaks when
it stays above its threshold for GUARD_STEPS steps in a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

GUARD_STEPS = 3


@dataclass(frozen=True)
class Guard:
    metric: str  # a key of the per-step metrics row
    threshold: float  # speak when the metric exceeds it for GUARD_STEPS steps in a row
    short: str  # for the progress line and the log row, with the setting to change; {value} is filled in
    advice: Callable[[float, dict, object], str]  # (mean of the metric, the last row, config) -> what to change


def truncation_advice(value: float, row: dict, cfg) -> str:
    return (
        f"{value:.0%} of rollouts were cut at max_completion_length ({cfg.max_completion_length} tokens) for "
        f"{GUARD_STEPS} steps in a row, so their answers are never written: raise max_completion_length "
        "(or set mask_truncated_completions to leave them out of the loss)"
    )


def zero_variance_advice(value: float, row: dict, cfg) -> str:
    unsolved = row.get("reward", 0.0) < 0.5
    cause = (
        "most prompts are never solved: check prompt_template, grader and max_completion_length, or use easier train_data"
        if unsolved
        else "most prompts are always solved: use harder train_data or raise num_generations"
    )
    return (
        f"{value:.0%} of groups had the same reward for all num_generations ({cfg.num_generations}) rollouts for "
        f"{GUARD_STEPS} steps in a row, so they carry no advantage and teach nothing; {cause}"
    )


GUARDS = (
    Guard("completions/truncated_fraction", 0.5, "{value:.0%} truncated: raise max_completion_length", truncation_advice),
    Guard("frac_reward_zero_std", 0.8, "{value:.0%} of groups without reward variance: change train_data or num_generations", zero_variance_advice),
)


def guard_warnings(recent: list[dict], cfg) -> list[tuple[str, str, str]]:
    """(metric, short, full message) for each guard whose metric exceeded its threshold in every one of the
    last GUARD_STEPS rows of `recent` (oldest first)."""
    last = recent[-GUARD_STEPS:]
    found = []
    if len(last) < GUARD_STEPS:
        return found
    for guard in GUARDS:
        values = [row.get(guard.metric) for row in last]
        if all(v is not None and v > guard.threshold for v in values):
            mean = sum(values) / len(values)
            found.append((guard.metric, guard.short.format(value=mean), guard.advice(mean, last[-1], cfg)))
    return found

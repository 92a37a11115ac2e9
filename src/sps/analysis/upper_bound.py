"""The empirical upper bound on Pass@k of a training run (docs/sps-method.md §6), as three named
quantities computed from its evaluated checkpoints (the base model, step 0, included):

  envelope          for each k, the maximum Pass@k over all evaluated checkpoints of the run;
  coverage ceiling  the fraction of problems solved by at least one sample of any checkpoint;
  base-model bound  Pass@k of the starting model at the largest k evaluated.

A Pass@k curve is a dict {k: Pass@k} with Pass@k a fraction in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class UpperBound:
    """The three quantities of one run."""

    envelope: dict[int, float]
    coverage_ceiling: float
    base_model_bound: tuple[int, float] | None  # (k, Pass@k); None without a base-model evaluation


def upper_bound(
    curves: Sequence[Mapping[int, float]],
    correct_by_checkpoint: Sequence[Mapping[str, int]],
    base_curve: Mapping[int, float] | None,
) -> UpperBound:
    """All three quantities from the run's checkpoints (see the functions below for the arguments)."""
    return UpperBound(
        envelope(curves),
        coverage_ceiling(correct_by_checkpoint),
        base_model_bound(base_curve) if base_curve is not None else None,
    )


def envelope(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """The envelope: {k: max over checkpoints of Pass@k}, for every k any checkpoint evaluated.

    curves: one Pass@k curve per checkpoint; a checkpoint that did not evaluate some k (fewer
    samples) does not take part in the maximum at that k. Raises ValueError without curves."""
    if not curves:
        raise ValueError("the envelope needs at least one evaluated checkpoint")
    ks = sorted({k for curve in curves for k in curve})
    return {k: max(curve[k] for curve in curves if k in curve) for k in ks}


def coverage_ceiling(correct_by_checkpoint: Sequence[Mapping[str, int]]) -> float:
    """The coverage ceiling: the fraction of problems with a correct sample at some checkpoint.

    correct_by_checkpoint: for each checkpoint, problem id -> its number of correct samples. The
    problems are all those any checkpoint evaluated, so a problem solved at a single checkpoint
    counts as covered. Raises ValueError when no problem was evaluated."""
    problems = {pid for counts in correct_by_checkpoint for pid in counts}
    if not problems:
        raise ValueError("the coverage ceiling needs at least one evaluated problem")
    solved = {pid for counts in correct_by_checkpoint for pid, correct in counts.items() if correct > 0}
    return len(solved) / len(problems)


def base_model_bound(base_curve: Mapping[int, float]) -> tuple[int, float]:
    """The base-model bound: (k, Pass@k) of the starting model's curve at its largest k."""
    if not base_curve:
        raise ValueError("the base-model bound needs the base model's Pass@k curve")
    k = max(base_curve)
    return k, base_curve[k]

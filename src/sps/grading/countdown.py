"""Grading the built-in Countdown testbed (sps.tasks.countdown): every step of a completion is parsed
and recomputed against the task's rules. Nothing is evaluated as code."""

from __future__ import annotations

from collections.abc import Sequence

from sps.grading.base import Grade
from sps.tasks.countdown import OPERATORS, RuleBroken, canonical_expression, check_steps, parse_steps
from sps.tasks.problem import Problem


def verify(
    completion: str, numbers: Sequence[int], target: int, max_value: int = 60, ops: str = OPERATORS
) -> Grade:
    """Grades a completion against the numbers and target, recomputing every step (no eval).

    Returns a Grade: "no_answer" for an empty completion, "malformed" when it does not parse,
    "invalid" when a step breaks a rule (detail names the step), else "ok" with the canonical
    expression as `extracted` and correct iff the final value is the target.
    """
    if not completion.strip():
        return Grade(correct=False, status="no_answer", detail="empty completion")
    try:
        steps = parse_steps(completion)
    except ValueError as error:
        return Grade(correct=False, status="malformed", detail=str(error))
    try:
        final = check_steps(steps, numbers, max_value, ops)
    except RuleBroken as error:
        return Grade(correct=False, status="invalid", detail=str(error))
    value = steps[-1][3]
    detail = None if value == target else f"reaches {value}, not the target {target}"
    return Grade(correct=value == target, status="ok", extracted=canonical_expression(final), detail=detail)


class CountdownGrader:
    """Grades countdown completions in-process; numbers, target and rules come from `Problem.meta`."""

    name = "countdown"

    def grade(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[Grade]:
        """Returns one Grade per (completion, problem) pair, in order."""
        if len(completions) != len(problems):
            raise ValueError(
                f"got {len(completions)} completions for {len(problems)} problems; they must pair up"
            )
        grades = []
        for completion, problem in zip(completions, problems, strict=True):
            missing = [key for key in ("numbers", "target", "max_value", "ops") if key not in problem.meta]
            if missing:
                raise ValueError(
                    f"problem {problem.id!r} is not a countdown problem: meta lacks {', '.join(missing)}"
                )
            meta = problem.meta
            grades.append(verify(completion, meta["numbers"], meta["target"], meta["max_value"], meta["ops"]))
        return grades

    def close(self) -> None:
        """Nothing to release: grading runs in this process."""

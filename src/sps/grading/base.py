"""The grading interface shared by math, multiple-choice and testbed graders."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sps.grading.pool import Failure, WorkerPool
from sps.tasks.problem import Problem

# Why a completion got the grade it got. Only "ok" means an answer was found and compared.
STATUSES = ("ok", "no_answer", "malformed", "invalid", "timeout", "error")


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    correct:   True only when an answer was extracted and is equivalent to the gold answer.
    status:    one of STATUSES: "ok" (compared), "no_answer" (nothing to extract), "malformed"
               (an answer that does not parse), "invalid" (parses but breaks the task's rules),
               "timeout" (grading exceeded its time limit), "error" (the grader failed).
    extracted: the answer as it appears in the completion (plain text, never a parsed object).
    detail:    a short human-readable reason for any status other than a plain "ok".
    """

    correct: bool
    status: str
    extracted: str | None = None
    detail: str | None = None


class Grader(Protocol):
    """Grades completions against problems; `grade` returns one Grade per pair, in order."""

    name: str

    def grade(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[Grade]: ...

    def close(self) -> None: ...


class PooledGrader:
    """A grader that runs `fn(*arguments(completion, problem))` -> Grade in a WorkerPool, each item
    under a hard timeout; an item that timed out or crashed gets a Grade with the Failure's status.

    Subclasses set `name`, pass their worker function to `__init__` and say in `arguments` what of a
    pair the worker needs; `key` groups items for per-worker caches (see `WorkerPool.map`).
    """

    name: str

    def __init__(
        self, fn: Callable[..., Grade], workers: int | None, timeout_s: float,
        initializer: Callable[[], None] | None = None, key: Callable[[tuple], Hashable] | None = None,
    ):
        self._pool = WorkerPool(fn, workers, timeout_s, initializer=initializer)
        self._key = key

    def arguments(self, completion: str, problem: Problem) -> tuple:
        raise NotImplementedError

    def graded_part(self, completion: str) -> str:
        """The part of a completion its grade depends on (all of it unless a subclass knows better):
        completions with the same graded part and problem are graded once."""
        return completion

    def grade(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[Grade]:
        """One Grade per (completion, problem) pair, in order.

        Each distinct (graded part, problem) is graded once: an RL group's samples often end in the
        same answer (SmolLM2's 64 samples of a problem held 21 distinct completions before training
        and 1 after). A problem is told apart by identity, as callers repeat one object per sample.
        """
        if len(completions) != len(problems):
            raise ValueError(f"got {len(completions)} completions for {len(problems)} problems")
        slots: dict[tuple[str, int], int] = {}  # (graded part, id(problem)) -> index among the items
        items, item_of = [], []
        for completion, problem in zip(completions, problems, strict=True):
            part = self.graded_part(completion)
            slot = slots.setdefault((part, id(problem)), len(items))
            if slot == len(items):
                items.append(self.arguments(part, problem))
            item_of.append(slot)
        results = self._pool.map(items, key=self._key)
        grades = [Grade(False, r.status, detail=r.detail) if isinstance(r, Failure) else r for r in results]
        return [grades[slot] for slot in item_of]

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.close()

    def __enter__(self) -> PooledGrader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

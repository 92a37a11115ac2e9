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

    def grade(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[Grade]:
        """One Grade per (completion, problem) pair, in order."""
        if len(completions) != len(problems):
            raise ValueError(f"got {len(completions)} completions for {len(problems)} problems")
        items = [self.arguments(c, p) for c, p in zip(completions, problems, strict=True)]
        results = self._pool.map(items, key=self._key)
        return [Grade(False, r.status, detail=r.detail) if isinstance(r, Failure) else r for r in results]

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.close()

    def __enter__(self) -> PooledGrader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The grading interface shared by math, multiple-choice and testbed graders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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

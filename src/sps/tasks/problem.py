"""The unit every task, benchmark and grader shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One problem of a benchmark or training set.

    `problem` is the statement as the dataset gives it (a prompt template turns it into model
    input); `answer` is the gold answer as text; `meta` holds task-specific fields a grader may
    need (for the countdown testbed: the numbers and the target); `columns` every column of the
    data row it was read from, for users' reward functions (sps.grading.rewards).
    """

    id: str
    problem: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)

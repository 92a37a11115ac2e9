"""Grading reasoning-gym tasks with each task's own scorer, in worker processes under a hard timeout.

The answer is the last `<answer>...</answer>` of the completion (reasoning-gym's convention), else
its last `\\boxed{...}`, else what follows its last "answer is" or "answer:" up to the end of that
sentence (small chat models state answers that way: "The final answer is 12."), else the whole
completion when it is one short line ("12"), as a model that answers with nothing else writes it. The task's `score_answer` returns a score in [0, 1]; only a full score
counts as correct (some scorers give partial credit to an answer that contains the gold one).
Scorers are plain Python over the answer's text; `sps.tasks.procedural` refuses tasks whose scorer
evaluates it as code. They still run in worker processes, so a slow one is killed at its deadline.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from sps.grading.base import Grade, PooledGrader
from sps.grading.math import last_boxed
from sps.tasks.problem import Problem

DEFAULT_TIMEOUT_S = 10.0
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# "answer is 12.", "Answer: -3", "answer is **7**": the rest of the sentence (a period that ends it
# is followed by a space, a newline or the end, so "2.5" stays whole).
BARE_ANSWER_CHARS = 24
_ANSWER_PHRASE = re.compile(r"(?i:answer)\s*(?:is|:)[\s:*]*(.+?)\**\s*(?:\.(?=\s|$)|\n|$)")


def extract_tagged_answer(completion: str) -> str | None:
    """The text of the last <answer>...</answer>, else of the last \\boxed{...}, else of the last
    "answer is ..." sentence, else the completion itself when it is one short line (a final period
    dropped); stripped; None if there is none of these."""
    tagged = _ANSWER_TAG.findall(completion)
    answer = tagged[-1] if tagged else last_boxed(completion)
    if answer is None:
        phrases = _ANSWER_PHRASE.findall(completion)
        answer = phrases[-1] if phrases else None
    bare = completion.strip().removesuffix(".")
    if answer is None and bare and "\n" not in bare and len(bare) <= BARE_ANSWER_CHARS:
        answer = bare
    return None if answer is None else answer.strip()


@lru_cache(maxsize=64)
def _scorer(task: str, settings_key: str):
    """The generator whose score_answer grades `task` with these settings, built once per worker."""
    from sps.tasks.procedural import make_dataset

    return make_dataset(task, json.loads(settings_key), seed=0, size=1)


def grade_procedural_serial(completion: str, meta: dict) -> Grade:
    """Grade one completion of a problem from `sps.tasks.procedural` (its meta) in this process."""
    answer = extract_tagged_answer(completion)
    if answer is None:
        return Grade(False, "no_answer", detail="no <answer>...</answer>, \\boxed{}, 'answer is' or short bare answer in the completion")
    score = _scorer(meta["rg_task"], meta["rg_settings"]).score_answer(answer, meta["rg_entry"])
    if not isinstance(score, int | float) or not 0 <= score <= 1:
        return Grade(False, "error", answer, f"the {meta['rg_task']} scorer returned {score!r}, not a score in [0, 1]")
    return Grade(score == 1, "ok", answer, None if score in (0, 1) else f"partial score {score:.3f}")


def _warm_up() -> None:
    """Worker initializer: import reasoning-gym before the first timed item."""
    import reasoning_gym  # noqa: F401


class ProceduralGrader(PooledGrader):
    """Grades reasoning-gym completions with their tasks' scorers, in worker processes."""

    name = "reasoning_gym"

    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__(grade_procedural_serial, workers, timeout_s, initializer=_warm_up)

    def arguments(self, completion: str, problem: Problem) -> tuple:
        if "rg_entry" not in problem.meta:
            raise ValueError(f"problem {problem.id!r} is not from an rg: task; the reasoning_gym grader needs one")
        return completion, problem.meta

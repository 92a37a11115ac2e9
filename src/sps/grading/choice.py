"""Multiple-choice grading (GPQA style): the gold answer is a letter, the completion names one."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sps.grading.base import Grade
from sps.grading.math import last_boxed
from sps.tasks.problem import Problem

# LaTeX commands and decoration around a letter: \text{(C)}, **C**, C., C) ...
_DECORATION = re.compile(r"\\[A-Za-z]+|[{}()\[\]\s.:$*]")
# "answer is (C)", "Answer: C", "**Answer:** C", "the answer is option c." The letter must be a
# capital, in parentheses, or last on its line: a lowercase one could be an article ("answer is a").
_ANSWER_PHRASE = re.compile(
    r"(?i:answer)\s*(?:is|:)[\s:*]*(?i:option|choice)?\s*"
    r"(?:\(([A-Za-z])\)|([A-Z])\b|([a-z])(?=[\s.*]*$))",
    re.MULTILINE,
)


def choice_letter(text: str) -> str | None:
    """The letter `text` consists of, upper-cased, with decoration ignored: "\\text{(c)}" -> "C"."""
    words = _DECORATION.sub(" ", text).split()
    if words and len(words[0]) == 1 and words[0].isalpha():
        return words[0].upper()
    return None


def extract_choice(completion: str) -> str | None:
    """The letter the completion chooses, as written: the last `\\boxed{X}`, else the last "answer is X"."""
    boxed = last_boxed(completion)
    if boxed is not None and choice_letter(boxed) is not None:
        return boxed
    phrases = list(_ANSWER_PHRASE.finditer(completion))
    if not phrases:
        return None
    last = phrases[-1]
    return last.group(last.lastindex)


def grade_choice(completion: str, gold: str) -> Grade:
    """Grade one completion against a gold letter."""
    gold_letter = choice_letter(gold)
    if gold_letter is None:
        return Grade(False, "error", detail=f"the gold answer {gold[:100]!r} is not a choice letter")
    extracted = extract_choice(completion)
    if extracted is None:
        return Grade(False, "no_answer", detail="no \\boxed{} letter and no 'answer is X' in the completion")
    return Grade(choice_letter(extracted) == gold_letter, "ok", extracted)


class ChoiceGrader:
    """Grades multiple-choice completions in this process (regexes only, nothing that can hang)."""

    name = "choice"

    def grade(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[Grade]:
        """One Grade per (completion, problem) pair, in order."""
        if len(completions) != len(problems):
            raise ValueError(f"got {len(completions)} completions for {len(problems)} problems")
        return [grade_choice(c, p.answer) for c, p in zip(completions, problems, strict=True)]

    def close(self) -> None:
        """Nothing to release."""

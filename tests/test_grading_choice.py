"""ChoiceGrader letter extraction, and the grader registry."""

from __future__ import annotations

import pytest

from sps.grading import registry
from sps.grading.base import Grade
from sps.grading.choice import ChoiceGrader, extract_choice, grade_choice
from sps.grading.registry import get_grader, grade_one, register_grader
from sps.tasks.problem import Problem


@pytest.mark.parametrize(
    ("completion", "letter"),
    [
        ("so it must be \\boxed{C}", "C"),
        ("\\boxed{\\text{(b)}}", "\\text{(b)}"),
        ("The answer is (A). Actually, the answer is (D).", "D"),
        ("**Answer:** B", "B"),
        ("Answer: c", "c"),
        ("the correct answer is option d.", "d"),
        ("\\boxed{42}, so the answer is (B)", "B"),  # a box without a letter is not a choice
        ("The answer is (A), i.e. \\boxed{B}", "B"),  # the box wins over the phrase
    ],
)
def test_extract_choice(completion, letter):
    assert extract_choice(completion) == letter


@pytest.mark.parametrize(
    "completion",
    ["I think the answer is a compound of sulfur.", "The answer is Avogadro's number.", "No idea."],
)
def test_words_are_not_letters(completion):
    assert extract_choice(completion) is None


def test_grades():
    grader = get_grader("choice")
    problems = [Problem(id=str(i), problem="", answer=gold) for i, gold in enumerate("CCA")]
    assert grader.grade(["\\boxed{c}", "Answer: D", "hmm"], problems) == [
        Grade(True, "ok", "c"),
        Grade(False, "ok", "D"),
        Grade(False, "no_answer", detail="no \\boxed{} letter and no 'answer is X' in the completion"),
    ]
    grader.close()


def test_gold_that_is_not_a_letter_is_an_error():
    result = grade_choice("\\boxed{A}", "42")
    assert result.status == "error" and "'42'" in result.detail


def test_grade_one_with_the_choice_grader():
    assert grade_one("(B)", "The answer is (B).", grader="choice").correct


def test_unknown_grader_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown grader 'nope'; known graders: .*choice.*math"):
        get_grader("nope")


def test_register_grader(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register_grader("letters", ChoiceGrader)
    assert isinstance(get_grader("letters"), ChoiceGrader)
    with pytest.raises(ValueError, match="'letters' is already registered"):
        register_grader("letters", ChoiceGrader)

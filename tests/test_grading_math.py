"""MathGrader with the real math-verify: equivalences, extraction, hostile and pathological completions."""

from __future__ import annotations

import time

import pytest

from sps.grading.base import Grade
from sps.grading.math import TAIL_CHARS, MathGrader, grade_math_serial, last_boxed
from sps.grading.registry import grade_one
from sps.tasks.problem import Problem

HARD_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def grader():
    with MathGrader(workers=2, timeout_s=HARD_TIMEOUT_S) as math_grader:
        yield math_grader


def grade(grader: MathGrader, completion: str, gold: str) -> Grade:
    return grader.grade([completion], [Problem(id="p", problem="", answer=gold)])[0]


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("So the answer is $\\boxed{\\frac{1}{2}}$.", "0.5"),
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("The solutions are \\boxed{1, 2, 3}", "\\{1,2,3\\}"),
        ("\\boxed{(1, 2]}", "(1,2]"),
        ("\\boxed{\\sqrt{8}}", "2\\sqrt2"),
        ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}"),
        ("First \\boxed{7}, but wait, it is \\boxed{18}", "18"),
        ("\\fbox{18}", "18"),
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),
        ("No box here. The final answer is 42", "42"),
    ],
)
def test_equivalent_answers_are_correct(grader, completion, gold):
    result = grade(grader, completion, gold)
    assert result.status == "ok" and result.correct, result


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("\\boxed{18}, no wait: \\boxed{7}", "18"),  # the last box counts
        ("\\boxed{(1, 2)}", "(1,2]"),
        ("\\boxed{\\frac{1}{3}}", "0.5"),
        ("\\boxed{3}", "\\{1,2,3\\}"),
    ],
)
def test_wrong_answers_are_incorrect(grader, completion, gold):
    result = grade(grader, completion, gold)
    assert result.status == "ok" and not result.correct, result


def test_extracted_is_the_boxed_text():
    assert grade_math_serial("so \\boxed{\\frac{1}{2}} done", "0.5").extracted == "\\frac{1}{2}"


def test_no_answer():
    result = grade_math_serial("I do not know how to solve this.", "5")
    assert result == Grade(False, "no_answer", detail=result.detail)


def test_empty_box_is_malformed():
    assert grade_math_serial("\\boxed{}", "5").status == "malformed"


def test_unparsable_gold_is_an_error_naming_it():
    result = grade_math_serial("\\boxed{1}", "\\frac{")
    assert result.status == "error" and "'\\\\frac{'" in result.detail


def test_completions_that_look_like_code_are_never_run(grader, tmp_path):
    marker = tmp_path / "PWNED"
    completions = [
        f"\\boxed{{__import__('os').system('touch {marker}')}}",
        f"The answer is __import__('os').system('touch {marker}')",
        f"Answer: exec(\"open('{marker}', 'w')\")",
        f"```python\nimport os\nos.system('touch {marker}')\n```\nFinal answer: eval('1+1')",
    ]
    results = grader.grade(completions, [Problem(id="p", problem="", answer="2")] * len(completions))
    assert not marker.exists()
    assert not any(result.correct for result in results), results


def test_pathological_completions_end_within_the_hard_timeout(grader):
    completions = [
        "\\boxed{(10^{10^{10}})!}",  # sympy would compute a 10^10-digit number
        "x + 1 = 2. " * 9_000 + "\\boxed{18}",  # about 100,000 characters
        "y = {{{ 2 ] \\boxed{18} }}}} \\boxed{ \\frac{1}",  # unbalanced braces, an unclosed last box
    ]
    start = time.monotonic()
    huge, long, unbalanced = grader.grade(completions, [Problem(id="p", problem="", answer="18")] * 3)
    assert time.monotonic() - start < HARD_TIMEOUT_S + 5
    assert huge.status == "timeout" and not huge.correct
    assert long.correct
    assert unbalanced.correct and unbalanced.extracted == "18"
    # The pool replaced the killed worker and still grades normally.
    assert grade(grader, "\\boxed{18}", "18").correct


def test_a_batch_grades_as_serial_with_a_stuck_item_among_them(grader):
    # Enough items that they travel in chunks; the stuck one is killed, its chunk-mates still graded.
    golds = ["18", "0.5", "\\{1,2,3\\}", "2\\sqrt2"]
    completions = [f"Step {i}. So \\boxed{{{golds[i % 4] if i % 3 else i}}}" for i in range(40)]
    problems = [Problem(id=str(i), problem="", answer=golds[i % 4]) for i in range(40)]
    completions[17] = "\\boxed{(10^{10^{10}})!}"
    grades = grader.grade(completions, problems)
    assert grades.pop(17).status == "timeout"
    del completions[17], problems[17]  # never graded in this process: it could hang the test
    assert grades == [grade_math_serial(c, p.answer) for c, p in zip(completions, problems, strict=True)]
    assert sum(g.correct for g in grades) == 25


@pytest.mark.parametrize(
    "completion",
    [
        "So $x = 2$ and the answer is $\\boxed{\\frac{1}{2}}$.",
        "\\boxed{\\boxed{3} + \\{1\\}}",  # nested, with escaped braces
        "first \\boxed{4}, then \\fbox{0.5} in the end",
        "y = {{{ 2 ] \\boxed{18} }}}} \\boxed{ \\frac{1}",  # unbalanced, an unclosed last box
        "no box, but the final answer is $\\frac{2}{4}$",
        "a \\boxed{7} far back, " + "x + 1 = 2. " * 300 + "and $0.5$ at the end",  # box outside the tail
        "I am not sure.",
    ],
)
def test_the_graded_part_of_a_completion_grades_as_the_whole(grader, completion):
    part = grader.graded_part(completion)
    assert len(part) <= max(TAIL_CHARS, len(completion) // 2)
    assert grade_math_serial(part, "0.5") == grade_math_serial(completion, "0.5")


def test_samples_with_one_boxed_answer_after_different_reasoning_grade_as_serial(grader):
    golds = ["0.5", "18"]
    completions = [f"Step {i}: {'x' * i}. So \\boxed{{{['1/2', '18', '19'][i % 3]}}}." for i in range(64)]
    problems = [Problem(id=g, problem="", answer=g) for g in golds]
    grades = grader.grade(completions, [problems[i % 2] for i in range(64)])
    assert grades == [grade_math_serial(c, golds[i % 2]) for i, c in enumerate(completions)]
    assert sum(g.correct for g in grades) == 22  # '1/2' for gold 0.5 (i % 6 == 0), '18' for 18 (i % 6 == 1)


def test_grade_one_convenience():
    assert grade_one("0.5", "\\boxed{1/2}") == Grade(True, "ok", "1/2")


def test_grade_rejects_mismatched_lengths(grader):
    with pytest.raises(ValueError, match="2 completions for 1 problems"):
        grader.grade(["a", "b"], [Problem(id="p", problem="", answer="1")])


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\boxed{3}}", "\\boxed{3}"),
        ("\\fbox {7} }", "7"),
        ("\\boxed{4} \\boxed{5", "4"),  # a box never closed does not count
        ("}} { \\boxed{6", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, content):
    assert last_boxed(text) == content


def test_last_boxed_is_linear_on_many_unclosed_boxes():
    start = time.monotonic()
    assert last_boxed("\\boxed{" * 50_000) is None
    assert time.monotonic() - start < 1

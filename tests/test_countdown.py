"""The countdown testbed: generator, splits, enumeration and verifier."""

from __future__ import annotations

import random
import re
import time

import pytest

from sps.grading.countdown import CountdownGrader, verify
from sps.tasks.countdown import (
    CountdownConfig,
    build_splits,
    enumerate_solutions,
    format_prompt,
    held_out_pairs,
    prompt_width,
)
from sps.tasks.problem import Problem

NUMBERS = [8, 5, 1, 7]


@pytest.fixture(scope="module")
def splits():
    return build_splits(CountdownConfig())


def multisets(problems):
    return {tuple(sorted(p.meta["numbers"])) for p in problems}


def test_splits_hold_out_whole_multisets(splits):
    assert len(splits["test"]) == 500 and len(splits["validation"]) == 300 and len(splits["train"]) > 5000
    train, validation, test = (multisets(splits[name]) for name in ("train", "validation", "test"))
    assert not train & validation and not train & test and not validation & test
    assert len(test) >= 100  # enough held-out multisets that test problems are not a handful of tuples
    ids = [p.id for problems in splits.values() for p in problems]
    assert len(ids) == len(set(ids))


def test_held_out_pairs_never_meet_in_training(splits):
    pairs = held_out_pairs(CountdownConfig())
    assert len(pairs["test"]) == 2 and len(pairs["validation"]) == 1
    assert not set(pairs["test"]) & set(pairs["validation"])

    def has(problem, chosen):
        return any(a in problem.meta["numbers"] and b in problem.meta["numbers"] for a, b in chosen)

    assert all(has(p, pairs["test"]) for p in splits["test"])
    assert all(has(p, pairs["validation"]) and not has(p, pairs["test"]) for p in splits["validation"])
    assert not any(has(p, pairs["test"] + pairs["validation"]) for p in splits["train"])


def test_problems_are_well_formed(splits):
    cfg = CountdownConfig()
    width = prompt_width(cfg)
    for problem in splits["test"] + splits["validation"]:
        numbers, target = problem.meta["numbers"], problem.meta["target"]
        assert problem.problem == format_prompt(numbers, target, width) and len(problem.problem) == width
        assert cfg.min_target <= target <= cfg.max_target and target not in numbers
        assert len(problem.meta["solutions"]) >= cfg.min_solutions
        assert problem.answer in {verify(s, numbers, target).extracted for s in problem.meta["solutions"]}


def test_every_enumerated_solution_verifies(splits):
    problems = splits["test"] + splits["validation"] + random.Random(0).sample(splits["train"], 500)
    for problem in problems:
        for solution in problem.meta["solutions"]:
            grade = verify(solution, problem.meta["numbers"], problem.meta["target"])
            assert grade.correct and grade.status == "ok", (problem.id, solution, grade)


def test_enumeration_finds_every_solution_the_verifier_accepts():
    """Random step chains that the verifier accepts must be enumerated (after writing larger operands first)."""
    rng = random.Random(1)
    accepted = 0
    for _ in range(2000):
        numbers = [rng.randint(1, 10) for _ in range(rng.choice((3, 4)))]
        pool, steps = list(numbers), []
        for _ in range(rng.randint(1, len(numbers) - 1)):
            a, b = rng.sample(pool, 2)
            pool.remove(a)
            pool.remove(b)
            op = rng.choice("+-*/")
            value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if a % b == 0 else 0}[op]
            if value <= 0:
                break
            steps.append((a, op, b, value))
            pool.append(value)
        completion = ",".join(f"{a}{op}{b}={c}" for a, op, b, c in steps)
        if not steps or verify(completion, numbers, target=0).status != "ok":
            continue
        accepted += 1
        larger_first = ",".join(
            f"{max(a, b)}{op}{min(a, b)}={c}" if op in "+*" else f"{a}{op}{b}={c}" for a, op, b, c in steps
        )
        assert larger_first in enumerate_solutions(numbers, max_value=60)[steps[-1][3]], (numbers, completion)
    assert accepted > 300


def test_splits_are_deterministic_and_seeded():
    cfg = CountdownConfig(max_numbers=3, test_pairs=6, validation_pairs=4, validation_size=10, test_size=30)
    first, second = build_splits(cfg), build_splits(cfg)
    assert first == second
    other = build_splits(CountdownConfig(max_numbers=3, test_pairs=6, validation_pairs=4, validation_size=10, test_size=30, seed=1))
    assert [p.id for p in other["test"]] != [p.id for p in first["test"]]


def test_resizing_one_split_leaves_the_others_alone():
    small = build_splits(CountdownConfig(max_numbers=3, test_pairs=6, validation_pairs=4, validation_size=10, test_size=30))
    bigger = build_splits(CountdownConfig(max_numbers=3, test_pairs=6, validation_pairs=4, validation_size=10, test_size=40))
    assert small["train"] == bigger["train"] and small["validation"] == bigger["validation"]


def test_too_large_split_names_the_fix():
    with pytest.raises(ValueError, match="test_size 100000 exceeds"):
        build_splits(CountdownConfig(max_numbers=3, test_size=100_000))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_numbers": 1},
        {"max_number": 70},
        {"min_target": 0},
        {"ops": "+%"},
        {"ops": "++"},
        {"test_pairs": 0},
        {"test_pairs": 44, "validation_pairs": 1},
        {"test_size": 0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="CountdownConfig"):
        CountdownConfig(**kwargs)


def test_enumeration_writes_larger_operands_first_and_skips_pointless_steps():
    solutions = enumerate_solutions([2, 3, 1], max_value=60)
    assert solutions[6] == ["2+1=3,3+3=6", "3*2=6", "3+1=4,4+2=6", "3+2=5,5+1=6"]
    assert not any("*1" in s or "/1=" in s for all_ in solutions.values() for s in all_)


def test_correct_solution():
    grade = verify("8+7=15,15-1=14", NUMBERS, 14)
    assert grade == verify("7+8=15,15-1=14", NUMBERS, 14)
    assert (grade.correct, grade.status, grade.extracted) == (True, "ok", "(7+8)-1")


def test_wrong_final_value_is_ok_but_not_correct():
    grade = verify("8+7=15,15-5=10", NUMBERS, 14)
    assert (grade.correct, grade.status, grade.extracted) == (False, "ok", "(7+8)-5")
    assert "10" in grade.detail


@pytest.mark.parametrize(
    ("completion", "numbers", "why"),
    [
        ("8+5=14", NUMBERS, "step 1: 8\\+5 is 13, not 14"),  # wrong arithmetic that claims the target
        ("8+7=15,15-5=14", NUMBERS, "step 2: 15-5 is 10, not 14"),
        ("9+5=14", NUMBERS, "step 1: 9 is not available"),
        ("7+7=14", NUMBERS, "step 1: 7 is not available"),  # one 7 given, used twice
        (
            "8-1=7,7+7=14,14-7=7",
            NUMBERS,
            "step 3: 7 is not available",
        ),  # the result 7 and the given 7 are both used
        ("7/2=3,3+5=8", [7, 2, 5], "step 1: 7/2 is not a whole number"),
        ("8*9=72,72-7=65", [8, 9, 7], "step 1: 8\\*9 is 72, above the maximum 60"),
        ("5-8=3", NUMBERS, "step 1: 5-8 is -3, not a positive integer"),
        ("8*1=8,8+5=13", NUMBERS, "step 1: .*dividing by 1"),
        ("8+7=15,5+1=6", NUMBERS, "result 15 of an earlier step is never used"),
    ],
)
def test_rule_breaking_steps_are_invalid(completion, numbers, why):
    grade = verify(completion, numbers, 14)
    assert (grade.correct, grade.status, grade.extracted) == (False, "invalid", None)
    assert re.search(why, grade.detail), grade.detail


def test_operators_outside_the_config_are_invalid():
    grade = verify("8*5=40", NUMBERS, 40, ops="+-")
    assert (grade.status, grade.detail) == ("invalid", "step 1: operator '*' is not allowed (allowed: +-)")


def test_a_result_and_an_equal_given_number_can_both_be_used():
    grade = verify("8-1=7,7+7=14", NUMBERS, 14)
    assert (grade.correct, grade.extracted) == (True, "7+(8-1)")


@pytest.mark.parametrize(
    "completion",
    [
        "hello",
        "1+",
        "8+7=15,",
        ",8+7=15",
        "8+7=15 ",
        "8+7=15.",
        "(8+7)=15",
        "8+(7=15",
        "08+7=15",
        "8+-7=1",
        "\u0663+1=4",  # an Arabic-Indic digit: int() would accept it
        "1234567+1=1234568",
        "9" * 100_000,
        "8+7=15," * 20_000,
        "__import__('os').system('echo pwned')",
    ],
)
def test_malformed_completions(completion):
    start = time.perf_counter()
    grade = verify(completion, NUMBERS, 14)
    assert time.perf_counter() - start < 0.1
    assert (grade.correct, grade.status, grade.extracted) == (False, "malformed", None)
    assert len(grade.detail) < 200


@pytest.mark.parametrize("completion", ["", "  ", "\n"])
def test_empty_completion_has_no_answer(completion):
    assert verify(completion, NUMBERS, 14).status == "no_answer"


def test_canonical_expression_ignores_step_order_and_operand_order():
    numbers = [1, 5, 7, 8]
    reordered = ["8+7=15,5+1=6,15-6=9", "5+1=6,8+7=15,15-6=9", "1+5=6,7+8=15,15-6=9"]
    assert {verify(s, numbers, 9).extracted for s in reordered} == {"(7+8)-(1+5)"}
    regrouped = ["7+1=8,8+5=13", "5+1=6,7+6=13", "7+5=12,12+1=13"]
    assert {verify(s, numbers, 13).extracted for s in regrouped} == {"1+5+7"}
    assert verify("8-5=3,7-3=4", numbers, 4).extracted != verify("8-7=1,5-1=4", numbers, 4).extracted


def test_grader_reads_problem_meta(splits):
    problem = splits["test"][0]
    grader = CountdownGrader()
    grades = grader.grade([problem.meta["solutions"][0], "oops"], [problem, problem])
    assert [g.status for g in grades] == ["ok", "malformed"] and grades[0].correct
    with pytest.raises(ValueError, match="'math-1' is not a countdown problem"):
        grader.grade(["1+1=2"], [Problem(id="math-1", problem="1+1", answer="2")])
    grader.close()

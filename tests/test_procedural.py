"""reasoning-gym tasks as a data source (`rg:<task>`): reproducible, disjoint splits, and a grader
that agrees with each task's own scorer."""

import sys

import pytest
import reasoning_gym

from sps.grading.procedural import ProceduralGrader, extract_tagged_answer, grade_procedural_serial
from sps.tasks.benchmarks import load_benchmark
from sps.tasks.procedural import parse_spec, split_of

CHAIN = "rg:chain_sum{split}?min_terms=2&max_terms=3&min_digits=1&max_digits=2"


def test_the_same_spec_gives_the_same_problems_and_another_seed_other_ones():
    first, again = load_benchmark(CHAIN.format(split=":test")), load_benchmark(CHAIN.format(split=":test"))
    assert first.name == "rg_chain_sum_test" and len(first.problems) == 500 and first.grader == "reasoning_gym"
    assert [(p.id, p.problem, p.answer) for p in first.problems] == [(p.id, p.problem, p.answer) for p in again.problems]
    other = load_benchmark(CHAIN.format(split=":test") + "&seed=1&size=100")
    assert len({p.problem for p in other.problems} - {p.problem for p in first.problems}) > 50


def test_train_val_and_test_are_disjoint_and_each_has_distinct_questions():
    splits = {split: load_benchmark(CHAIN.format(split=f":{split}") + "&size=300").problems for split in ("train", "val", "test")}
    questions = {split: {p.problem for p in problems} for split, problems in splits.items()}
    assert all(len(questions[s]) == 300 for s in splits)
    assert not questions["train"] & questions["val"] and not questions["train"] & questions["test"]
    assert not questions["val"] & questions["test"]
    assert all(split_of(q) == s for s, qs in questions.items() for q in qs)
    # The default split is train, and a bigger split starts with the smaller one's problems.
    default = load_benchmark(CHAIN.format(split="") + "&size=400").problems
    assert [p.id for p in default[:300]] == [p.id for p in splits["train"]]


def test_settings_reach_the_generator():
    problems = load_benchmark("rg:chain_sum:val?min_terms=4&max_terms=4&min_digits=3&max_digits=3&size=20").problems
    for p in problems:
        expression = p.problem.rsplit(":", 1)[1].strip().rstrip("=")
        numbers = expression.replace("+", " ").replace("-", " ").split()
        assert len(numbers) == 4 and all(len(n) == 3 for n in numbers)
    assert parse_spec('rg:basic_arithmetic:test?operators=["+","-"]&seed=3&size=7') == (
        "basic_arithmetic", "test", 3, 7, {"operators": ["+", "-"]})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rg:countdown", "evaluating them as code"),
        ("rg:no_such_task", "no task 'no_such_task'"),
        ("rg:chain_sum:dev", "split 'dev' is unknown"),
        ("rg:chain_sum?size=0", "size must be a positive integer"),
        ("rg:chain_sum?min_terms", "not key=value"),
        ("rg:chain_sum?min_terms=x", "rejects the settings"),
        ("rg:chain_sum:test?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=100", "only"),
    ],
)
def test_bad_specs_are_errors_that_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        load_benchmark(spec)


def test_without_reasoning_gym_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # what `import` sees when it is not installed
    with pytest.raises(ImportError, match=r"sps-rl\[tasks\]"):
        load_benchmark("rg:chain_sum:test?size=5")


@pytest.mark.parametrize(
    "spec",
    [CHAIN.format(split=":val") + "&size=20", "rg:leg_counting:val?size=20", "rg:letter_counting:val?size=20"],
)
def test_the_grader_agrees_with_the_tasks_own_scorer(spec):
    bench = load_benchmark(spec)
    task = bench.problems[0].meta["rg_task"]
    scorer = reasoning_gym.create_dataset(task, seed=0, size=1)
    completions, problems, expected = [], [], []
    for p in bench.problems:
        wrong = str(int(p.answer) + 1)
        for text, answer in ((f"<answer>{p.answer}</answer>", p.answer), (f"So \\boxed{{{p.answer}}}.", p.answer),
                             (f"The final answer is {p.answer}.", p.answer), (f"<answer>{wrong}</answer>", wrong)):
            completions.append(text)
            problems.append(p)
            expected.append(scorer.score_answer(answer, p.meta["rg_entry"]) == 1.0)
    with ProceduralGrader(workers=2) as grader:
        grades = grader.grade(completions, problems)
    assert [g.correct for g in grades] == expected
    assert sum(expected) == 3 * len(bench.problems)  # every right answer counts, no wrong one does
    assert all(g.status == "ok" for g in grades)


def test_answer_extraction_prefers_tags_then_boxes_then_the_answer_sentence():
    assert extract_tagged_answer("<answer> 5 </answer> \\boxed{4} the answer is 3.") == "5"
    assert extract_tagged_answer("\\boxed{4}. The answer is 3.") == "4"
    assert extract_tagged_answer("I think the answer is 2.5.\nThe final answer is **-7**.") == "-7"
    assert extract_tagged_answer("Answer: 12\nbecause") == "12"
    assert extract_tagged_answer(" 12.\n") == "12"  # a reply that is only the answer
    assert extract_tagged_answer("no answer here, nothing to see") is None
    assert extract_tagged_answer("12\nbecause I counted") is None


def test_a_completion_without_an_answer_and_a_partial_score_are_not_correct():
    problem = load_benchmark("rg:chain_sum:val?size=1").problems[0]
    assert grade_procedural_serial("I do not know what to say here", problem.meta).status == "no_answer"
    # chain_sum's scorer gives partial credit to an answer that contains the gold one.
    spelled = grade_procedural_serial(f"<answer>{problem.answer} or 999</answer>", problem.meta)
    assert spelled.status == "ok" and not spelled.correct

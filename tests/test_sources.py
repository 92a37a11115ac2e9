"""The table of named benchmarks against the shipped data files, the offline errors, and GPQA."""

import json
from pathlib import Path

import pytest

from sps.grading.choice import ChoiceGrader
from sps.paths import data_dir
from sps.tasks.benchmarks import load_benchmark
from sps.tasks.sources import SOURCES, gpqa_row

SHARED = data_dir()
NOT_SHIPPED = {"gpqa_diamond", "openr1_math"}  # gated / too large: supplied by the user or the hub


@pytest.mark.skipif(SHARED is None, reason="no shared data folder next to the checkout")
@pytest.mark.parametrize("name", sorted(set(SOURCES) - NOT_SHIPPED))
def test_every_named_source_reads_its_shipped_file_without_a_bad_row(name):
    source = SOURCES[name]
    assert (SHARED / source.file).is_file(), f"{name}: {source.file} is not in {SHARED}"
    bench = load_benchmark(name, str(SHARED))
    assert bench.skipped == [] and bench.grader == "math" and bench.source == str(SHARED / source.file)
    assert all(p.problem.strip() and p.answer.strip() for p in bench.problems)
    assert len({p.id for p in bench.problems}) == len(bench.problems)
    first = load_benchmark(name, str(SHARED), limit=3)
    assert [p.id for p in first.problems] == [p.id for p in bench.problems[:3]]


def test_the_paper_benchmarks_all_have_a_hub_copy_and_a_license():
    for name in ("math500", "aime24", "aime25", "gpqa_diamond", "brumo25", "hmmt_feb25", "hmmt_nov25", "openr1_math"):
        source = SOURCES[name]
        assert source.hub and source.hub.count("/") == 1 and source.license, name


def test_offline_without_the_file_the_error_names_the_file_and_the_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("SPS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        load_benchmark("aime25")
    assert "aime25.jsonl" in str(error.value) and "MathArena/aime_2025" in str(error.value)
    with pytest.raises(FileNotFoundError, match="gpqa_diamond.jsonl.*accept its terms"):
        load_benchmark("gpqa_diamond")
    with pytest.raises(FileNotFoundError, match="data folder only.*amc23.jsonl"):
        load_benchmark("amc23")


def test_gsm8k_hub_rows_keep_the_number_after_the_hashes():
    from sps.tasks.sources import gsm8k_row

    assert gsm8k_row({"question": "q", "answer": "so 1,000 + 80\n#### 1,080"})["answer"] == "1080"


def gpqa_rows():
    """Made-up rows in GPQA's schema (the real set must not be shown in plain text)."""
    return [
        {
            "Record ID": f"rec{i}",
            "Question": f"Which number is {i} plus one?",
            "Correct Answer": str(i + 1),
            "Incorrect Answer 1": str(i + 2),
            "Incorrect Answer 2": str(i + 3),
            "Incorrect Answer 3": str(i + 4),
            "Subdomain": "Arithmetic",
        }
        for i in range(12)
    ]


def test_gpqa_choices_are_shuffled_by_a_fixed_seed_per_problem(tmp_path):
    rows = gpqa_rows()
    path = tmp_path / "gpqa_diamond.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = load_benchmark(str(path))  # by path: the format is recognised from the columns
    assert bench.grader == "choice" and [p.id for p in bench.problems] == [f"rec{i}" for i in range(12)]
    for row, problem in zip(rows, bench.problems):
        # The correct answer sits under the gold letter, and the order does not depend on the row's position.
        assert f"({problem.answer}) {row['Correct Answer']}\n" in problem.problem
        assert gpqa_row(row) == gpqa_row(dict(reversed(list(row.items()))))
    assert len({p.answer for p in bench.problems}) >= 3  # not always the same letter
    reversed_file = tmp_path / "reversed.jsonl"
    reversed_file.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    again = {p.id: p for p in load_benchmark(str(reversed_file)).problems}
    assert all(again[p.id].problem == p.problem and again[p.id].answer == p.answer for p in bench.problems)
    # By name from the data folder, and graded by the letter.
    named = load_benchmark("gpqa_diamond", str(tmp_path))
    assert named.grader == "choice" and [p.answer for p in named.problems] == [p.answer for p in bench.problems]
    first = named.problems[0]
    wrong = next(letter for letter in "ABCD" if letter != first.answer)
    grades = ChoiceGrader().grade([f"so \\boxed{{{first.answer}}}", f"The answer is ({wrong})."], [first, first])
    assert [g.correct for g in grades] == [True, False]


def test_gpqa_evaluates_from_a_local_file(tmp_path, random_llama):
    from sps.evaluation.evaluate import evaluate_model
    from sps.evaluation.runner import EvalSettings

    path = tmp_path / "gpqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in gpqa_rows()[:3]))
    base = EvalSettings(model=str(random_llama), benchmark="", n=2, max_new_tokens=4, temperature=1.0)
    results = evaluate_model(str(random_llama), [str(path)], tmp_path / "out", base, device="cpu", prompt_template="plain")
    metrics = results["gpqa"]
    assert metrics["n"] == 2 and 0.0 <= metrics["avg_at_n"] <= 1.0
    settings = json.loads(Path(tmp_path / "out" / "settings.json").read_text())
    assert settings["grader"] == "choice"

"""Benchmarks by name or path; malformed rows are reported and counted, never dropped silently."""

import json

import pytest

from sps.tasks.benchmarks import load_benchmark, split_specs
from sps.tasks.templates import QWEN_BOXED, encode_prompt, render_prompt


def write_rows(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_rows_become_problems_and_bad_rows_are_reported(tmp_path):
    path = write_rows(
        tmp_path / "mini.jsonl",
        [
            json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}),
            json.dumps({"id": "b", "problem": "2+2?", "answer": 4}),  # a number answer becomes text
            "{not json",
            json.dumps({"id": "c", "problem": "", "answer": "1"}),
            json.dumps({"id": "d", "problem": "x?"}),
            json.dumps({"id": "a", "problem": "again", "answer": "3"}),
            json.dumps({"problem": "no id", "answer": "5"}),
        ],
    )
    bench = load_benchmark(str(path))
    assert bench.name == "mini"
    assert [(p.id, p.answer) for p in bench.problems] == [("a", "2"), ("b", "4"), ("7", "5")]
    assert len(bench.skipped) == 4
    assert "line 3: not valid JSON" in bench.skipped[0]
    assert "line 4: field 'problem' is missing or empty" in bench.skipped[1]
    assert "line 5: field 'answer' is missing or empty" in bench.skipped[2]
    assert "duplicate 'id' 'a'" in bench.skipped[3]


def test_custom_field_names(tmp_path):
    path = write_rows(tmp_path / "q.jsonl", [json.dumps({"qid": 7, "question": "Q", "gold": "1"})])
    from sps.tasks.benchmarks import FieldNames

    bench = load_benchmark(str(path), fields=FieldNames(id="qid", problem="question", answer="gold"))
    assert (bench.problems[0].id, bench.problems[0].problem, bench.problems[0].answer) == ("7", "Q", "1")


def test_unusable_file_and_unknown_names_are_errors(tmp_path):
    path = write_rows(tmp_path / "bad.jsonl", ["{}", "[]"])
    with pytest.raises(ValueError, match="no usable rows"):
        load_benchmark(str(path))
    with pytest.raises(ValueError, match="unknown benchmark 'math5000'"):
        load_benchmark("math5000")
    with pytest.raises(ValueError, match="empty entry"):
        split_specs("math500,,aime24")


def test_named_benchmarks_read_the_shared_data_folder(tmp_path, monkeypatch):
    write_rows(tmp_path / "aime24.jsonl", [json.dumps({"id": "x", "problem": "p", "answer": "1"})])
    monkeypatch.setenv("SPS_DATA_DIR", str(tmp_path))
    bench = load_benchmark("aime24")
    assert bench.grader == "math" and bench.template == "qwen-boxed" and len(bench.problems) == 1
    with pytest.raises(FileNotFoundError, match="math500.jsonl"):
        load_benchmark("math500")


def test_testbed_splits_are_benchmarks():
    bench = load_benchmark("countdown-test")
    assert bench.grader == "countdown" and bench.template == "plain" and len(bench.problems) >= 500


def test_templates(random_llama):
    from sps.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(random_llama))
    assert render_prompt("plain", "  1 2>3:", tokenizer) == "  1 2>3:"
    assert render_prompt("qwen-boxed", "What?", tokenizer) == QWEN_BOXED.replace("{problem}", "What?")
    assert encode_prompt("plain", "1 2>3:", tokenizer) == tokenizer.encode("1 2>3:")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render_prompt("chat", "x", tokenizer)
    with pytest.raises(ValueError, match="unknown prompt template"):
        render_prompt("fancy", "x", tokenizer)

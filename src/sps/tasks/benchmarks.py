"""Benchmarks and training sets by name, JSON Lines path, or Hugging Face dataset.

A specification is one of:
  - a name resolved in the data folder (see `sps.paths.data_dir`): math500, aime24, gsm8k, ...;
  - a testbed split: countdown-train, countdown-val, countdown-test (generated, no files needed);
  - a path to a JSON Lines file whose rows have `problem` and `answer` (and ideally `id`);
  - `hf:owner/name[:split]`, read with the `datasets` library (field names configurable).
Malformed rows are left out, and every one is reported in `Benchmark.skipped`; nothing is
dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sps.paths import data_dir as resolve_data_dir
from sps.tasks.problem import Problem

# Names resolved in the data folder, and the file each one reads.
DATA_FILES = {
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
    "hmmt_feb25": "hmmt_feb25.jsonl",
    "hmmt_nov25": "hmmt_nov25.jsonl",
    "brumo25": "brumo25.jsonl",
    "cmimc25": "cmimc25.jsonl",
    "minerva_math": "minerva_math.jsonl",
    "olympiadbench": "olympiadbench.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
    "gsm8k_train": "gsm8k_train.jsonl",
    "math_train": "math_train.jsonl",
    "math_test_extra4500": "math_test_extra4500.jsonl",
}
TESTBED_SPLITS = {"countdown-train": "train", "countdown-val": "validation", "countdown-test": "test"}


@dataclass
class FieldNames:
    """Which row fields hold the id, the problem statement and the gold answer."""

    id: str = "id"
    problem: str = "problem"
    answer: str = "answer"


@dataclass
class Benchmark:
    name: str
    problems: list[Problem]
    grader: str  # a grader name for sps.grading.registry.get_grader
    template: str  # the prompt template used when the user names none
    source: str  # where the problems came from, for reports
    skipped: list[str] = field(default_factory=list)  # one message per malformed row left out


def split_specs(specs: str) -> list[str]:
    """'math500,aime24' -> ['math500', 'aime24'] (blank entries are an error)."""
    parts = [s.strip() for s in specs.split(",")]
    if not specs.strip() or any(not p for p in parts):
        raise ValueError(f"benchmark list {specs!r} has an empty entry")
    return parts


def load_benchmark(spec: str, data_dir: str | None = None, fields: FieldNames | None = None) -> Benchmark:
    """Load one benchmark specification (see the module docstring)."""
    fields = fields or FieldNames()
    if spec in TESTBED_SPLITS:
        return testbed_benchmark(spec)
    if spec.startswith("hf:"):
        return hub_benchmark(spec, fields)
    if spec in DATA_FILES:
        folder = resolve_data_dir(data_dir)
        if folder is None:
            raise FileNotFoundError(
                f"benchmark {spec!r} is read from the data folder, but none is set: "
                "pass --data-dir or set SPS_DATA_DIR"
            )
        path = folder / DATA_FILES[spec]
        if not path.is_file():
            raise FileNotFoundError(f"benchmark {spec!r}: {path} does not exist")
        return jsonl_benchmark(path, spec, fields)
    path = Path(spec).expanduser()
    if path.is_file():
        return jsonl_benchmark(path, path.stem, fields)
    known = ", ".join([*DATA_FILES, *TESTBED_SPLITS])
    raise ValueError(f"unknown benchmark {spec!r}: not a file, not hf:owner/name, and not one of {known}")


def jsonl_benchmark(path: Path, name: str, fields: FieldNames) -> Benchmark:
    rows, skipped = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {line_no}", str(line_no), json.loads(line)))
            except json.JSONDecodeError as e:
                skipped.append(f"{path.name} line {line_no}: not valid JSON ({e.msg})")
    problems, bad = rows_to_problems(rows, fields, f"{path.name} ")
    return require_problems(Benchmark(name, problems, "math", "qwen-boxed", str(path), skipped + bad))


def hub_benchmark(spec: str, fields: FieldNames) -> Benchmark:
    import datasets

    dataset_id, _, split = spec[len("hf:") :].partition(":")
    try:
        data = datasets.load_dataset(dataset_id, split=split or "test")
    except Exception as e:  # datasets raises many types for a missing id, split or network
        raise FileNotFoundError(f"could not load Hugging Face dataset {dataset_id!r} (split {split or 'test'!r}): {e}") from e
    rows = [(f"row {i}", str(i), row) for i, row in enumerate(data)]
    problems, skipped = rows_to_problems(rows, fields, f"{dataset_id} ")
    name = f"{dataset_id.replace('/', '_')}_{split or 'test'}"
    return require_problems(Benchmark(name, problems, "math", "qwen-boxed", spec, skipped))


def rows_to_problems(rows: list[tuple[str, str, object]], fields: FieldNames, where: str) -> tuple[list[Problem], list[str]]:
    """Turn (location, default id, row) triples into Problems; returns (problems, messages for
    rows left out). A row without an id gets the default (its line number or row index);
    answers that are numbers become text."""
    problems, skipped, seen = [], [], set()
    for location, default_id, row in rows:
        if not isinstance(row, dict):
            skipped.append(f"{where}{location}: not a JSON object")
            continue
        problem, answer = row.get(fields.problem), row.get(fields.answer)
        if not isinstance(problem, str) or not problem.strip():
            skipped.append(f"{where}{location}: field {fields.problem!r} is missing or empty")
            continue
        if isinstance(answer, int | float) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            skipped.append(f"{where}{location}: field {fields.answer!r} is missing or empty")
            continue
        problem_id = str(row.get(fields.id, default_id))
        if problem_id in seen:
            skipped.append(f"{where}{location}: duplicate {fields.id!r} {problem_id!r}")
            continue
        seen.add(problem_id)
        problems.append(Problem(id=problem_id, problem=problem, answer=answer.strip()))
    return problems, skipped


def require_problems(benchmark: Benchmark) -> Benchmark:
    if not benchmark.problems:
        detail = f"; first problem: {benchmark.skipped[0]}" if benchmark.skipped else ""
        raise ValueError(f"benchmark {benchmark.name!r} ({benchmark.source}) has no usable rows{detail}")
    return benchmark


def testbed_benchmark(spec: str) -> Benchmark:
    from sps.tasks.countdown import CountdownConfig, build_splits

    problems = build_splits(CountdownConfig())[TESTBED_SPLITS[spec]]
    return Benchmark(spec, problems, "countdown", "plain", "built-in countdown testbed (default task config)")

"""Benchmarks and training sets by name, file path, or Hugging Face dataset.

A specification is one of:
  - a name from the table in `sps.tasks.sources` (math500, aime24, gpqa_diamond, openr1_math, ...):
    the file in the data folder (see `sps.paths.data_dir`) when it exists, else the hub copy;
  - a testbed split: countdown-train, countdown-val, countdown-test (generated, no files needed);
  - a path to a JSON Lines (or CSV) file whose rows have `problem` and `answer` (and ideally `id`),
    or GPQA's columns;
  - `hf:owner/name[:split]`, read with the `datasets` library (field names configurable);
  - `rg:<task>[:split][?settings]`, a reasoning-gym generator (see `sps.tasks.procedural`).
Malformed rows are left out, and every one is reported in `Benchmark.skipped`; nothing is
dropped silently. `limit` reads only the first rows (a dry run's look at the data).
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from sps.paths import data_dir as resolve_data_dir
from sps.tasks.problem import Problem
from sps.tasks.procedural import PREFIX, load_procedural
from sps.tasks.sources import FORMAT_GRADERS, ROW_FORMATS, SOURCES, FieldNames, Source, detect_format

__all__ = ["Benchmark", "FieldNames", "load_benchmark", "split_specs", "SOURCES", "TESTBED_SPLITS"]

TESTBED_SPLITS = {"countdown-train": "train", "countdown-val": "validation", "countdown-test": "test"}


@dataclass
class Benchmark:
    name: str
    problems: list[Problem]
    grader: str  # a grader name for sps.grading.registry.get_grader
    template: str  # the prompt template used when the user names none
    source: str  # where the problems came from, for reports
    skipped: list[str] = field(default_factory=list)  # one message per malformed row left out


def hold_out(benchmark: Benchmark, count: int) -> tuple[Benchmark, Benchmark]:
    """(the benchmark less its last `count` problems, those problems as a benchmark of their own)."""
    if not 1 <= count < len(benchmark.problems):
        raise ValueError(f"eval_split {count} must leave problems to train on: {benchmark.source} holds {len(benchmark.problems)}")
    rest, held = benchmark.problems[:-count], benchmark.problems[-count:]
    return (replace(benchmark, problems=rest),
            replace(benchmark, name=f"{benchmark.name}-held-out", problems=held, source=f"the last {count} rows of {benchmark.source}"))


def split_specs(specs: str) -> list[str]:
    """'math500,aime24' -> ['math500', 'aime24'] (blank entries are an error)."""
    parts = [s.strip() for s in specs.split(",")]
    if not specs.strip() or any(not p for p in parts):
        raise ValueError(f"benchmark list {specs!r} has an empty entry")
    return parts


def load_benchmark(
    spec: str, data_dir: str | None = None, fields: FieldNames | None = None, limit: int | None = None
) -> Benchmark:
    """Load one benchmark specification (see the module docstring); at most `limit` rows when given."""
    fields = fields or FieldNames()
    if spec in TESTBED_SPLITS:
        return testbed_benchmark(spec)
    if spec.startswith(PREFIX):
        name, problems = load_procedural(spec)
        return Benchmark(name, problems[:limit], "reasoning_gym", "chat", spec)
    if spec.startswith("hf:"):
        dataset_id, _, split = spec[len("hf:") :].partition(":")
        name = f"{dataset_id.replace('/', '_')}_{split or 'test'}"
        return hub_benchmark(name, spec, dataset_id, None, split or "test", fields, None, limit)
    if spec in SOURCES:
        return named_benchmark(spec, SOURCES[spec], data_dir, fields, limit)
    path = Path(spec).expanduser()
    if path.is_file():
        return file_benchmark(path, path.stem, fields, None, limit)
    known = ", ".join([*SOURCES, *TESTBED_SPLITS])
    raise ValueError(f"unknown benchmark {spec!r}: not a file, not hf:owner/name or rg:<task>, and not one of {known}")


def named_benchmark(name: str, source: Source, data_dir: str | None, fields: FieldNames, limit: int | None) -> Benchmark:
    """The file in the data folder when it is there, else the hub copy; the error names both."""
    folder = resolve_data_dir(data_dir)
    if folder is not None and (folder / source.file).is_file():
        return file_benchmark(folder / source.file, name, fields, source.row_format, limit, source.grader)
    where = f"{folder / source.file} does not exist" if folder else "no data folder is set (--data-dir or SPS_DATA_DIR)"
    if source.hub is None:
        raise FileNotFoundError(
            f"benchmark {name!r} is read from the data folder only, and {where}: put {source.file} there. "
            f"{source.how_to_get}".rstrip()
        )
    try:
        return hub_benchmark(name, source.hub, source.hub, source.config, source.split, source.fields, source.row_format, limit, source.grader)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"benchmark {name!r}: {where}, and its hub copy {source.hub} could not be read ({e}). "
            f"Put {source.file} into the data folder, or make the hub reachable. {source.how_to_get}".rstrip()
        ) from e


def file_benchmark(
    path: Path, name: str, fields: FieldNames, row_format: str | None, limit: int | None, grader: str | None = None
) -> Benchmark:
    """A JSON Lines (or, by its .csv suffix, CSV) file; row_format None detects it from the first row."""
    rows, skipped = [], []
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not part of the first header
            rows = [(f"row {i}", str(i), row) for i, row in enumerate(itertools.islice(csv.DictReader(f), limit), start=1)]
    else:
        with open(path, "rb") as f:
            numbered = ((n, line) for n, line in enumerate(f, start=1) if line.strip())
            for line_no, raw in itertools.islice(numbered, limit):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    skipped.append(f"{path.name} line {line_no}: not UTF-8 (byte {e.start})")
                    continue
                try:
                    rows.append((f"line {line_no}", str(line_no), json.loads(line)))
                except json.JSONDecodeError as e:
                    skipped.append(f"{path.name} line {line_no}: not valid JSON ({e.msg})")
    return formatted_benchmark(name, str(path), rows, fields, row_format, f"{path.name} ", skipped, grader)


def hub_benchmark(
    name: str, spec: str, dataset_id: str, config: str | None, split: str, fields: FieldNames,
    row_format: str | None, limit: int | None, grader: str | None = None,
) -> Benchmark:
    """A Hugging Face dataset; with `limit`, only its first rows are streamed."""
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, config, split=split, streaming=limit is not None)
        rows = [(f"row {i}", str(i), row) for i, row in enumerate(itertools.islice(data, limit))]
    except Exception as e:  # datasets raises many types for a missing id, split, gated set or network
        raise FileNotFoundError(f"could not load Hugging Face dataset {dataset_id!r} (split {split!r}): {e}") from e
    return formatted_benchmark(name, spec, rows, fields, row_format, f"{dataset_id} ", [], grader)


def formatted_benchmark(
    name: str, source: str, rows: list, fields: FieldNames, row_format: str | None, where: str, skipped: list[str],
    grader: str | None,
) -> Benchmark:
    """Rows through their row format (detected from the first row when None), then into Problems."""
    if row_format is None:
        row_format = detect_format(rows[0][2] if rows else None)
        fields = fields if row_format == "plain" else FieldNames()
    convert = ROW_FORMATS[row_format]
    rows = [(loc, default, convert(row) if isinstance(row, dict) else row) for loc, default, row in rows]
    problems, bad = rows_to_problems(rows, fields, where)
    grader = grader or FORMAT_GRADERS.get(row_format, "math")
    return require_problems(Benchmark(name, problems, grader, "qwen-boxed", source, skipped + bad))


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
        problems.append(Problem(id=problem_id, problem=problem, answer=answer.strip(), columns=row))
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

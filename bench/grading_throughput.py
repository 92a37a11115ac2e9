"""Math grading throughput: MathGrader's worker pool (2 and 4 workers) against serial in-process grading.

Completions are built at run time from MATH-500 (the data is not committed), four per problem: the
correct answer, another problem's answer (wrong), an equivalent rewrite of the answer (5 -> 5.0,
\\frac{a}{b} -> a/b, or an unboxed "final answer is $...$"), and no boxed answer. In two styles:
"long", the problem's reference solution with that ending (a MATH-style solution, ~500 characters);
and "short", one sentence, as a small chat model writes it ("The answer is $\\boxed{12}$.").

    python bench/grading_throughput.py [--data-dir ../shared/data] [--problems 100]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import re
import resource
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

from sps.grading.base import Grade
from sps.grading.math import MathGrader, grade_math_serial
from sps.tasks.problem import Problem

REPO_ROOT = Path(__file__).resolve().parents[1]
_FRACTION = re.compile(r"\\d?frac\{(\d+)\}\{(\d+)\}")


def equivalent_rewrite(gold: str) -> str:
    """An answer equivalent to `gold` but written differently, as models do."""
    if gold.isdigit():
        return f"\\boxed{{{gold}.0}}"
    fraction = _FRACTION.fullmatch(gold)
    if fraction:
        return f"\\boxed{{{fraction[1]}/{fraction[2]}}}"
    return f"The final answer is ${gold}$."


def completions(row: dict, other_answer: str, style: str) -> list[str]:
    """One problem's four completions: correct, wrong, rewritten, without a boxed answer."""
    rewrite = equivalent_rewrite(row["answer"])
    if style == "short":
        boxed = "The answer is $\\boxed{{{}}}$."
        return [boxed.format(row["answer"]), boxed.format(other_answer), rewrite, "I am not sure."]
    reasoning = row["solution"][: row["solution"].rfind("\\boxed{")]
    return [row["solution"], f"{reasoning}\\boxed{{{other_answer}}}$.", reasoning + rewrite, reasoning]


def build_items(data_dir: Path, first: int, count: int, style: str) -> list[tuple[str, str]]:
    """(completion, gold) pairs, four per problem, for MATH-500 problems first .. first + count - 1."""
    with open(data_dir / "math500.jsonl") as file:
        rows = [json.loads(line) for line in file][first : first + count]
    if len(rows) < count:
        raise SystemExit(f"MATH-500 has no problems {first}..{first + count - 1}: ask for fewer --problems")
    return [
        (completion, row["answer"])
        for row, other in zip(rows, rows[1:] + rows[:1], strict=True)
        for completion in completions(row, other["answer"], style)
    ]


def grade_serially(items: list[tuple[str, str]]) -> list[Grade]:
    return [grade_math_serial(completion, gold) for completion, gold in items]


def grade_with(grader: MathGrader) -> Callable[[list[tuple[str, str]]], list[Grade]]:
    def grade(items: list[tuple[str, str]]) -> list[Grade]:
        completions = [completion for completion, _ in items]
        return grader.grade(completions, [Problem(id="", problem="", answer=gold) for _, gold in items])

    return grade


def measure(
    grade: Callable[[list[tuple[str, str]]], list[Grade]],
    cold_items: list[tuple[str, str]],
    warm_items: list[tuple[str, str]],
) -> tuple[float, float, list[Grade]]:
    """Seconds for a first batch (cold processes), seconds for a second batch, and its grades.

    The batches have different problems, so both start with math-verify's gold cache empty; the
    first also pays for starting processes and for warming antlr's parser caches in each of them.
    """
    start = time.perf_counter()
    grade(cold_items)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    grades = grade(warm_items)
    return cold_s, time.perf_counter() - start, grades


def cpu_seconds() -> float:
    """CPU time of this process and of its exited children (the pool's workers, once closed)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def spin(iterations: int) -> float:
    """Pure-Python busy work; returns its own wall-clock seconds."""
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i
    return time.perf_counter() - start


def cores_available(processes: int, iterations: int = 3_000_000) -> float:
    """How many cores' worth of CPU `processes` busy processes get right now, given the other jobs."""
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as executor:
        list(executor.map(spin, [1] * processes))  # start the processes outside the timing
        alone = executor.submit(spin, iterations).result()
        together = max(executor.map(spin, [iterations] * processes))
    return processes * alone / together


def compare(
    cold_items: list[tuple[str, str]], warm_items: list[tuple[str, str]], worker_counts: list[int]
) -> list[str]:
    """Table rows for serial grading and for each pool size, and a line on the serial grades."""
    n_cold, n_warm = len(cold_items), len(warm_items)
    cpu_start = cpu_seconds()
    cold_s, serial_s, serial_grades = measure(grade_serially, cold_items, warm_items)
    serial_cpu_s = cpu_seconds() - cpu_start
    rows = [
        f"| `grade_math_serial`, one process | - | {n_cold / cold_s:.0f} | {n_warm / serial_s:.0f} | 1.00x "
        f"| {serial_cpu_s:.1f} | - |",
    ]
    for workers in worker_counts:
        cpu_start = cpu_seconds()
        with MathGrader(workers=workers) as grader:
            cold_s, pool_s, grades = measure(grade_with(grader), cold_items, warm_items)
        pool_cpu_s = cpu_seconds() - cpu_start
        differing = sum(a != b for a, b in zip(grades, serial_grades, strict=True))
        same = f"no, {differing} differ" if differing else "yes"
        rows.append(
            f"| `MathGrader` pool | {workers} | {n_cold / cold_s:.0f} | {n_warm / pool_s:.0f} "
            f"| {serial_s / pool_s:.2f}x | {pool_cpu_s:.1f} | {same} |"
        )
    statuses = Counter((grade.status, grade.correct) for grade in serial_grades)
    status_text = ", ".join(
        f"{status}/{'correct' if correct else 'wrong'}: {count}"
        for (status, correct), count in sorted(statuses.items())
    )
    return [
        f"First batch: {n_cold} completions; second batch: {n_warm} completions of other problems;"
        f" serial grades of the second batch: {status_text}.",
        "",
        "| grader | workers | first batch items/s | second batch items/s | vs serial | CPU s, both batches | same grades as serial |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def machine_state() -> str:
    cpus = os.cpu_count() or 1
    return (
        f"1-minute load average {os.getloadavg()[0]:.2f}; {cpus} busy processes got"
        f" {cores_available(cpus):.1f} cores' worth of CPU"
    )


def report(data_dir: Path, problems: int, worker_counts: list[int], command: str) -> str:
    # Each style and batch has problems of its own, so no process starts with their golds cached:
    # long: timed (second) batch 0..N-1, first batch N..2N-1; short: 2N..3N-1 and 3N..4N-1.
    batches = {
        style: (
            build_items(data_dir, offset + problems, problems, style),
            build_items(data_dir, offset, problems, style),
        )
        for offset, style in ((0, "long"), (2 * problems, "short"))
    }
    at_start = machine_state()
    sections = []
    for style, (cold_items, warm_items) in batches.items():
        sections += [
            f"## {style.capitalize()} completions",
            "",
            *compare(cold_items, warm_items, worker_counts),
            "",
        ]
    versions = ", ".join(f"{pkg} {version(pkg)}" for pkg in ("math-verify", "latex2sympy2_extended", "sympy"))
    return "\n".join(
        [
            "# Math grading throughput",
            "",
            f"- Date: {datetime.date.today()}",
            f"- Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}). When the run"
            f" started: {at_start}. When it ended: {machine_state()}.",
            f"- Versions: Python {platform.python_version()}, {versions}",
            f"- Command: `{command}`",
            '- Completions: "long" are MATH-500 reference solutions (a few hundred characters of'
            ' reasoning), "short" one sentence; per problem one correct, one wrong, one rewritten'
            " (5.0 for 5, a/b for a fraction, or unboxed) and one with no boxed answer.",
            "- 'vs serial' compares second batches. The first batch includes starting the workers;"
            " CPU time includes it too, summed over the parent and all workers. Other jobs on the"
            " machine distort the comparison: serial grading needs one core, the pool all of them."
            " Each process warms its own parser caches (math-verify took twice the CPU on a fresh"
            " process's first 30 problems as after 100 others), and in the first batch each worker"
            " sees only its share of the problems.",
            "",
            *sections,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "../shared/data")
    parser.add_argument(
        "--problems",
        type=int,
        default=100,
        help="MATH-500 problems per batch (4 completions each; 4 batches, so at most 125)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/grading_throughput.md")
    args = parser.parse_args()
    command = shlex.join(["python", os.path.relpath(__file__, REPO_ROOT), *sys.argv[1:]])
    text = report(args.data_dir, args.problems, args.workers, command)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

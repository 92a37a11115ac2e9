"""Math grading throughput: MathGrader's worker pool (2 and 4 workers) against serial in-process grading.

Completions are built at run time from MATH-500 reference solutions (the data is not committed):
per problem, the solution with its correct boxed answer, the same solution boxed with another
problem's answer (wrong), an equivalent rewrite of the answer (5 -> 5.0, \\frac{a}{b} -> a/b, or
an unboxed "final answer is $...$"), and the solution cut before its box (no boxed answer).

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


def build_items(data_dir: Path, first: int, count: int) -> list[tuple[str, str]]:
    """(completion, gold) pairs, four per problem, for MATH-500 problems first .. first + count - 1."""
    with open(data_dir / "math500.jsonl") as file:
        rows = [json.loads(line) for line in file][first : first + count]
    items = []
    for row, other in zip(rows, rows[1:] + rows[:1], strict=True):
        reasoning = row["solution"][: row["solution"].rfind("\\boxed{")]
        items += [
            (row["solution"], row["answer"]),
            (f"{reasoning}\\boxed{{{other['answer']}}}$.", row["answer"]),
            (f"{reasoning}{equivalent_rewrite(row['answer'])}", row["answer"]),
            (reasoning, row["answer"]),
        ]
    return items


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


def report(
    cold_items: list[tuple[str, str]],
    warm_items: list[tuple[str, str]],
    worker_counts: list[int],
    command: str,
) -> str:
    n_cold, n_warm = len(cold_items), len(warm_items)
    load = os.getloadavg()[0]
    cores = cores_available(os.cpu_count() or 1)
    cpu_start = cpu_seconds()
    cold_s, serial_s, serial_grades = measure(grade_serially, cold_items, warm_items)
    serial_cpu_s = cpu_seconds() - cpu_start
    lines = [
        "| grader | workers | first batch items/s | second batch items/s | vs serial | CPU s, both batches | same grades as serial |",
        "|---|---|---|---|---|---|---|",
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
        lines.append(
            f"| `MathGrader` pool | {workers} | {n_cold / cold_s:.0f} | {n_warm / pool_s:.0f} "
            f"| {serial_s / pool_s:.2f}x | {pool_cpu_s:.1f} | {same} |"
        )
    statuses = Counter((grade.status, grade.correct) for grade in serial_grades)
    status_text = ", ".join(
        f"{status}/{'correct' if correct else 'wrong'}: {count}"
        for (status, correct), count in sorted(statuses.items())
    )
    versions = ", ".join(f"{pkg} {version(pkg)}" for pkg in ("math-verify", "latex2sympy2_extended", "sympy"))
    return "\n".join(
        [
            "# Math grading throughput",
            "",
            f"- Date: {datetime.date.today()}",
            f"- Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), shared with other"
            f" jobs. When the run started: 1-minute load average {load:.2f}; {os.cpu_count()} busy"
            f" processes got {cores:.1f} cores' worth of CPU.",
            f"- Versions: Python {platform.python_version()}, {versions}",
            f"- Command: `{command}`",
            f"- First batch: {n_cold} completions; second batch: {n_warm} completions of other problems,"
            f" graded by the same process(es); its serial grades: {status_text}",
            "- 'vs serial' compares second batches. The first batch includes starting the workers;"
            " CPU time includes it too, summed over the parent and all workers.",
            "",
            *lines,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "../shared/data")
    parser.add_argument(
        "--problems", type=int, default=100, help="MATH-500 problems per batch (4 completions each)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/grading_throughput.md")
    args = parser.parse_args()
    # The timed (second) batch is problems 0..N-1; the first batch the N problems after them.
    warm_items = build_items(args.data_dir, 0, args.problems)
    cold_items = build_items(args.data_dir, args.problems, args.problems)
    command = shlex.join(["python", os.path.relpath(__file__, REPO_ROOT), *sys.argv[1:]])
    text = report(cold_items, warm_items, args.workers, command)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

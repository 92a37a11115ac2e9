"""Math grading throughput: MathGrader's worker pool (2 and 4 workers) against serial in-process grading.

Four sets of completions, each timed once per grader after every grader has warmed up on the same
800 other completions (a fresh process's parser caches make its first problems twice as slow):
- "long" and "short" are built at run time from MATH-500 (the warm-up from the rest of MATH's test
  set; the data is not committed), four per
  problem: the correct answer, another problem's answer (wrong), an equivalent rewrite (5 -> 5.0,
  \\frac{a}{b} -> a/b, or an unboxed "final answer is $...$"), and no boxed answer. "long" ends
  the problem's reference solution so (~500 characters); "short" is one sentence, as a small chat
  model writes it ("The answer is $\\boxed{12}$."). Every completion has an answer of its own.
- "SmolLM2 base" and "SmolLM2 after GRPO" are real rollouts, 64 per problem, of SmolLM2-135M-Instruct
  on `rg:aiw:test` before and after GRPO (docs/real-model.md), committed in bench/data/ (graded here
  with math-verify against the task's integer answer). Samples of a problem repeat answers, as RL
  groups do, and MathGrader grades each distinct (answer, problem) once.

    python bench/grading_throughput.py [--data-dir ../shared/data] [--problems 250]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import multiprocessing
import os
import platform
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

from sps.grading.base import Grade
from sps.grading.math import MathGrader, _parse_gold, grade_math_serial, graded_part
from sps.tasks.problem import Problem

REPO_ROOT = Path(__file__).resolve().parents[1]
_FRACTION = re.compile(r"\\d?frac\{(\d+)\}\{(\d+)\}")
REAL_SAMPLES = REPO_ROOT / "bench/data/smollm2_aiw_samples.jsonl.gz"
REAL_PROBLEMS = 50  # per real set: 3,200 completions
WARM_UP_PROBLEMS = 200  # half long, half short
# A completion, its problem's gold answer, and the problem's id.
Item = tuple[str, str, str]


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


def build_items(data_file: Path, first: int, count: int, style: str) -> list[Item]:
    """Items, four per problem, for problems first .. first + count - 1 of a MATH file."""
    with open(data_file) as file:
        rows = [json.loads(line) for line in file][first : first + count]
    if len(rows) < count:
        raise SystemExit(f"{data_file.name} has no problems {first}..{first + count - 1}: ask for fewer --problems")
    return [
        (completion, row["answer"], row["id"])
        for row, other in zip(rows, rows[1:] + rows[:1], strict=True)
        for completion in completions(row, other["answer"], style)
    ]


def grade_serially(items: list[Item]) -> list[Grade]:
    return [grade_math_serial(completion, gold) for completion, gold, _ in items]


def distinct_items(items: list[Item]) -> list[Item]:
    """What MathGrader sends to its workers: each (graded part, problem) once, in order of first appearance."""
    return list(dict.fromkeys((graded_part(completion), gold, problem) for completion, gold, problem in items))


def grade_distinct_serially(items: list[Item]) -> list[Grade]:
    """Serial grading of each distinct (graded part, problem) once: the gain that is not the pool's parallelism."""
    grades = dict(zip(distinct := distinct_items(items), grade_serially(distinct), strict=True))
    return [grades[graded_part(completion), gold, problem] for completion, gold, problem in items]


def grade_with(grader: MathGrader) -> Callable[[list[Item]], list[Grade]]:
    def grade(items: list[Item]) -> list[Grade]:
        # One Problem object per problem, repeated for its samples, as the trainer and `sps eval` do.
        problems = {problem: Problem(id=problem, problem="", answer=gold) for _, gold, problem in items}
        return grader.grade([completion for completion, _, _ in items], [problems[problem] for _, _, problem in items])

    return grade


def real_rollouts(model: str, first: int, count: int) -> list[Item]:
    """Items: SmolLM2's 64 samples of each of problems first .. first + count - 1."""
    with gzip.open(REAL_SAMPLES, "rt") as file:
        rows = [row for row in map(json.loads, file) if row["model"] == model][first : first + count]
    if len(rows) < count:
        raise SystemExit(f"{REAL_SAMPLES.name} has no {model} problems {first}..{first + count - 1}")
    return [(completion, row["gold"], row["problem_id"]) for row in rows for completion in row["completions"]]


def timed(grade: Callable[[list[Item]], list[Grade]], items: list[Item]) -> tuple[float, list[Grade]]:
    start = time.perf_counter()
    grades = grade(items)
    return time.perf_counter() - start, grades


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


def machine_state() -> str:
    cpus = os.cpu_count() or 1
    return (
        f"1-minute load average {os.getloadavg()[0]:.2f}; {cpus} busy processes got"
        f" {cores_available(cpus):.1f} cores' worth of CPU"
    )


def report(data_dir: Path, problems: int, worker_counts: list[int], command: str) -> str:
    # Each set has problems of its own, so no grader starts a set with its golds cached.
    half, math500 = WARM_UP_PROBLEMS // 2, data_dir / "math500.jsonl"
    warm_up = [*build_items(data_dir / "math_test_extra4500.jsonl", 0, half, "long"),
               *build_items(data_dir / "math_test_extra4500.jsonl", half, half, "short")]
    sets = {
        "long": build_items(math500, 0, problems, "long"),
        "short": build_items(math500, problems, problems, "short"),
        "SmolLM2 base": real_rollouts("base", 0, REAL_PROBLEMS),
        "SmolLM2 after GRPO": real_rollouts("grpo", REAL_PROBLEMS, REAL_PROBLEMS),
    }
    at_start = machine_state()
    seconds: dict[str, dict[str, float]] = {}
    grades: dict[str, dict[str, list[Grade]]] = {}
    warm_up_rate = {}
    serial_graders = {"serial": grade_serially, "distinct": grade_distinct_serially}
    for name in [*serial_graders, *worker_counts]:
        _parse_gold.cache_clear()  # the serial graders share this process: each starts without parsed golds, as a new worker does
        with (contextlib.nullcontext() if name in serial_graders else MathGrader(workers=name)) as grader:
            grade = serial_graders[name] if name in serial_graders else grade_with(grader)
            warm_up_s, _ = timed(grade, warm_up)  # includes starting the workers
            warm_up_rate[name] = len(warm_up) / warm_up_s
            for set_name, items in sets.items():
                seconds.setdefault(set_name, {})[name], grades.setdefault(set_name, {})[name] = timed(grade, items)
    sections = []
    for set_name, items in sets.items():
        serial_s, serial_grades = seconds[set_name]["serial"], grades[set_name]["serial"]
        distinct = len(distinct_items(items))
        rows = [f"| `grade_math_serial`, one process | - | {len(items) / serial_s:.0f} | 1.00x | - |"]
        labels = {"distinct": ("`grade_math_serial` of each distinct pair once, one process", "-")}
        for name in ["distinct", *worker_counts]:
            label, workers = labels.get(name, ("`MathGrader` pool", name))
            other_s, other_grades = seconds[set_name][name], grades[set_name][name]
            differing = sum(a != b for a, b in zip(other_grades, serial_grades, strict=True))
            rows.append(
                f"| {label} | {workers} | {len(items) / other_s:.0f} | {serial_s / other_s:.2f}x"
                f" | {f'no, {differing} differ' if differing else 'yes'} |"
            )
        statuses = Counter((grade.status, grade.correct) for grade in serial_grades)
        status_text = ", ".join(
            f"{status}/{'correct' if correct else 'wrong'}: {count}" for (status, correct), count in sorted(statuses.items())
        )
        sections += [
            f"## {set_name}",
            "",
            f"{len(items)} completions, {distinct} distinct (answer, problem) pairs; serial grades: {status_text}.",
            "",
            "| grader | workers | items/s | vs serial | same grades as serial |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    versions = ", ".join(f"{pkg} {version(pkg)}" for pkg in ("math-verify", "latex2sympy2_extended", "sympy"))
    warm_up_text = ", ".join(
        f"{name if name in serial_graders else f'pool of {name}'} {rate:.0f}" for name, rate in warm_up_rate.items()
    )
    return "\n".join(
        [
            "# Math grading throughput",
            "",
            f"- Date: {datetime.date.today()}",
            f"- Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}). When the run"
            f" started: {at_start}. When it ended: {machine_state()}.",
            f"- Versions: Python {platform.python_version()}, {versions}",
            f"- Command: `{command}`",
            f"- Each grader first grades {len(warm_up)} completions of {WARM_UP_PROBLEMS} MATH test problems outside MATH-500"
            f" (items/s, starting the workers included: {warm_up_text}), then each set below once.",
            "- 'vs serial' divides serial grading's time by the pool's. Other jobs on the machine distort"
            " it: serial grading needs one core, the pool all of them. Two pure-Python processes on this"
            " machine run at 1.66-1.78x one (measured 2026-12-02), the most a pool of 2 can gain on"
            " completions that are all distinct. The machine's speed drifts: rerun before trusting a"
            " ratio to 20%.",
            "- 'each distinct pair once' runs in this process after serial grading, with sympy's and"
            " antlr's caches warmed by the same expressions, so it overstates what deduplication alone"
            " gives (1.3x on sets with 0.5% duplicates).",
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
        default=250,
        help="MATH-500 problems in each of the long and short sets (4 completions each; at most 250)",
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

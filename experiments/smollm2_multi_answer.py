"""A real-model task where a problem has more than one correct completion (issue 24, item 3): can
SmolLM2-135M-Instruct's solution diversity be squeezed? A screen of small procedural tasks, each
written as JSON Lines splits and graded by `reward` below through `--reward-funcs` (the user's
route of docs/python.md), on the base model: Pass@1, Pass@n and distinct correct completions per
solved problem (the target: at least 1.5, with Pass@1 low enough for RL to raise). Then GRPO and
SPS train on the chosen task with the aiw protocol of docs/real-model.md (configs/smollm2/aiw_grpo.yaml
and aiw_sps.yaml on the task's 512 training problems, 40 steps of 8 x 16, at most 16 new tokens),
and the base model and each step-40 checkpoint are evaluated on its 300 test problems (n = 64).

    python experiments/smollm2_multi_answer.py [--tasks between,multiple,sum_pair] [--problems 48] [--n 16]
    python experiments/smollm2_multi_answer.py --train grpo,sps --tasks multiple --seeds 0 [--workers 2]

Splits: out/multi_answer/<task>/{train,val,test}.jsonl (disjoint problems); runs in
out/multi_answer/<task>/<method>/seed<k>/ (finished runs and evaluations are skipped). Screen rows
are appended to experiments/results/smollm2_multi_answer.jsonl. --train records each test result in
experiments/results/smollm2_multi_answer_<task>_test.json (a run recorded there is not trained again, so a
lost out/ loses no results) and writes the table of all of them to smollm2_multi_answer.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sps.grading.math import last_boxed

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "out" / "multi_answer"
RESULTS = REPO / "experiments" / "results" / "smollm2_multi_answer.jsonl"
SHOWN = ("pass_at_k", "num_solved", "distinct_correct_per_solved", "top1_share")  # what the record keeps of a run
NUMBER = re.compile(r"\s*(\d+)\s*\.?\s*")
SPLITS = {"train": 512, "val": 100, "test": 300}
REWARD = f"{Path(__file__).resolve()}:reward"  # as --reward-funcs names it
PAIR = re.compile(r"\s*(\d+)\s*\+\s*(\d+)\s*\.?\s*")


def is_correct(text: str, task: str, low: int | None, high: int | None, divisor: int | None, total: int | None) -> bool:
    """Whether one answer text solves one problem (the row's columns; those a task lacks are None)."""
    if task == "sum_pair":
        match = PAIR.fullmatch(text)
        return bool(match) and int(match[1]) + int(match[2]) == total
    match = NUMBER.fullmatch(text)
    if not match:
        return False
    value = int(match[1])
    inside = low < value < high if task == "between" else low <= value <= high
    return inside and value % (divisor or 1) == 0


def reward(completions, task, low=None, high=None, divisor=None, total=None, **_):
    """TRL's convention: every column of the rows arrives as a list; 1.0 for a correct answer, else 0.0."""
    missing = [None] * len(completions)
    return [float(is_correct(last_boxed(c) or c, *row))
            for c, row in zip(completions, zip(task, low or missing, high or missing, divisor or missing, total or missing), strict=True)]


def random_problem(task: str, rng: random.Random) -> dict:
    """One random problem of `task`, as a row: its statement, one correct answer and the columns `reward` reads."""
    if task == "between":
        low = rng.randint(2, 500)
        high = low + rng.randint(4, 10)
        return {"problem": f"Write a whole number greater than {low} and less than {high}.", "answer": str(low + 1),
                "low": low, "high": high}
    if task == "multiple":
        divisor = rng.randint(2, 9)
        low = rng.randint(1, 200)
        high = low + divisor * rng.randint(3, 5)
        first = -(-low // divisor) * divisor
        return {"problem": f"Name a multiple of {divisor} between {low} and {high}.", "answer": str(first),
                "low": low, "high": high, "divisor": divisor}
    if task == "sum_pair":
        total = rng.randint(10, 2000)
        return {"problem": f"Write two whole numbers that add up to {total}, in the form a + b.", "answer": f"1 + {total - 1}",
                "total": total}
    raise ValueError(f"unknown task {task!r}; choose one of between, multiple, sum_pair")


def write_splits(task: str, sizes: dict[str, int]) -> Path:
    """Disjoint train/val/test files of distinct problems (seeded, so every machine gets the same)."""
    folder = DATA / task
    folder.mkdir(parents=True, exist_ok=True)
    rng, seen = random.Random(f"multi_answer/{task}"), set()
    for split, size in sizes.items():
        rows = []
        for _ in range(100 * size):
            if len(rows) == size:
                break
            row = random_problem(task, rng)
            if row["problem"] not in seen:
                seen.add(row["problem"])
                rows.append({"id": f"{task}-{split}-{len(rows)}", "task": task, **row})
        if len(rows) < size:
            raise ValueError(f"task {task!r}: only {len(rows)} distinct {split} problems left; widen its ranges")
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def sps_command(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sps.cli", *args], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def evaluate_on_test(model: str, folder: Path, task: str) -> dict:
    """The aiw protocol's test evaluation (n = 64, temperature 0.6), skipped once done."""
    if not (folder / "metrics.json").is_file():
        sps_command("eval", "--model", model, "--benchmark", str(DATA / task / "test.jsonl"), "--prompt-template", "chat-answer",
                    "--n", "64", "--temperature", "0.6", "--max-new-tokens", "16", "--batch-size", "256", "--reward-funcs", REWARD,
                    "--out", str(folder))
    return json.loads((folder / "metrics.json").read_text())


def train_and_test(task: str, method: str, seed: int) -> dict:
    folder = DATA / task / method / f"seed{seed}"
    last = folder / "checkpoints" / "step_000040"
    if not last.is_dir():
        sps_command("train", "--config", str(REPO / f"configs/smollm2/aiw_{method}.yaml"), "--train_data", str(DATA / task / "train.jsonl"),
                    "--train_size", "0", "--reward_funcs", REWARD, "--eval_benchmark", str(DATA / task / "val.jsonl"),
                    "--max_completion_length", "16", "--seed", str(seed), "--output_dir", str(folder))
    return {"method": method, "seed": seed, **evaluate_on_test(str(last), folder / "test", task)}


def report(task: str, runs: list[dict]) -> str:
    lines = [f"# SmolLM2-135M-Instruct on `{task}`: several correct answers per problem (experiments/smollm2_multi_answer.py)", "",
             "300 test problems, n = 64, temperature 0.6, at most 16 new tokens; step-40 checkpoints (aiw protocol).", "",
             "| | seed | Pass@1 | Pass@8 | Pass@64 | problems solved | distinct correct completions per solved problem | top-1 share |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        k = r["pass_at_k"]
        lines.append(f"| {r['method']} | {r['seed']} | {k['1']:.3f} | {k['8']:.3f} | {k['64']:.3f} | {r['num_solved']} | "
                     f"{r['distinct_correct_per_solved']:.2f} | {r['top1_share']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="between,multiple,sum_pair")
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--train", default="", help="comma-separated methods to train and test (grpo, sps) instead of screening")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.train:
        (task,) = args.tasks.split(",")
        write_splits(task, SPLITS)
        recorded = RESULTS.with_name(f"smollm2_multi_answer_{task}_test.json")  # {"base": metrics, "runs": [{method, seed, metrics}]}
        record = json.loads(recorded.read_text()) if recorded.is_file() else {"runs": []}
        done = {(r["method"], r["seed"]) for r in record["runs"]}
        jobs = [(m, int(s)) for s in args.seeds.split(",") for m in args.train.split(",") if (m, int(s)) not in done]
        with ThreadPoolExecutor(args.workers) as pool:
            base = None if "base" in record else pool.submit(evaluate_on_test, "smollm2-135m-instruct", DATA / task / "base_test", task)
            runs = list(pool.map(lambda job: train_and_test(task, *job), jobs))
        if base:
            record["base"] = {key: base.result()[key] for key in SHOWN}
        record["runs"] = sorted(record["runs"] + [{key: r[key] for key in ("method", "seed", *SHOWN)} for r in runs],
                                key=lambda r: (r["method"], r["seed"]))
        recorded.write_text(json.dumps(record, indent=1) + "\n")
        text = report(task, [{"method": "base model", "seed": "-", **record["base"]}, *record["runs"]])
        (RESULTS.with_suffix(".md")).write_text(text)
        print(text)
        return
    for task in args.tasks.split(","):
        folder = write_splits(task, SPLITS)
        rows = [json.loads(line) for line in (folder / "val.jsonl").read_text().splitlines()][: args.problems]
        screen = folder / "screen.jsonl"
        screen.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = folder / f"screen_n{args.n}"
        sps_command("eval", "--model", "smollm2-135m-instruct", "--benchmark", str(screen), "--prompt-template", "chat-answer",
                    "--n", str(args.n), "--temperature", str(args.temperature), "--max-new-tokens", "16", "--reward-funcs", REWARD,
                    "--out", str(out), "--overwrite")
        metrics = json.loads((out / "metrics.json").read_text())
        summary = {"task": task, "problems": len(rows), "n": args.n, "temperature": args.temperature,
                   **{key: metrics.get(key) for key in ("pass_at_k", "distinct_correct_per_solved", "distinct_answers_per_solved",
                                                         "top1_share", "mean_reward")}}
        with open(RESULTS, "a") as f:
            f.write(json.dumps(summary) + "\n")
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":  # the grading workers import this file for `reward`
    main()

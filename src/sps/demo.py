"""`sps demo`: the whole project in one command, on the built-in testbed.

Builds (or reuses) the testbed model, trains GRPO and SPS from it side by side (one process and
one CPU thread each, which on a 2-core machine beats one two-threaded run after the other), each
run evaluating the base model and its checkpoints on held-out test problems, then writes the
`sps analyze` report and prints the headline numbers. Rerunning resumes what was interrupted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sps.io import read_jsonl
from sps.models.testbed import TestbedConfig, build_testbed
from sps.paths import REPO_ROOT


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs: the testbed, and the overrides applied to the shipped configs."""

    testbed: TestbedConfig
    train: dict


FULL = DemoPlan(
    testbed=TestbedConfig(),
    train={"max_steps": 150, "eval_every": 50, "eval_benchmark": "countdown-test", "eval_limit": 250, "eval_n": 64, "save_every": 50},
)
# About 5 minutes from an empty cache, 2 once the testbed is built: the same testbed model (a
# weaker, shorter-trained one gave too little reward for RL to learn from and collapsed) and a
# short, stronger RL phase, 30 steps at 1.5x the learning rate. docs/analysis.md has its numbers
# on 3 seeds. The tests run it and share its testbed.
QUICK = DemoPlan(
    testbed=TestbedConfig(),
    train={
        "max_steps": 30, "learning_rate": 1.5e-4, "eval_every": 15, "eval_benchmark": "countdown-test",
        "eval_limit": 100, "eval_n": 32, "save_every": 15, "probe_problems": 8,
    },
)
CONFIGS = {"grpo": "configs/testbed/grpo.yaml", "sps": "configs/testbed/sps.yaml"}


def run_demo(out: Path, quick: bool = False) -> Path:
    """Run the demo into `out`; returns the analysis report folder."""
    from sps.analysis.report import analyze

    plan = QUICK if quick else FULL
    start = time.monotonic()
    print("1/4  testbed model: building or reusing the cached one")
    model = build_testbed(plan.testbed)
    print(f"     {model}")
    print("2/4  training GRPO and SPS side by side (one CPU thread each)")
    runs = {name: out / name for name in CONFIGS}
    train_side_by_side(model, runs, plan.train)
    print("3/4  evaluations: done by the runs themselves (base model at step 0, then every eval_every steps)")
    print("4/4  analysis report")
    report = analyze(list(runs.values()), out / "analysis")
    print_headline(runs)
    print(f"\nreport: {report / 'report.html'} (and report.md); took {(time.monotonic() - start) / 60:.1f} min")
    return report


def train_side_by_side(model: Path, runs: dict[str, Path], overrides: dict) -> None:
    """Start one `sps train` process per run, show their progress together, and wait for both."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    steps = overrides["max_steps"]
    processes = {}
    for name, folder in runs.items():
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"model": str(model), "output_dir": str(folder), "threads": 1, **overrides}
        command = [sys.executable, "-m", "sps.cli", "train", "--config", str(REPO_ROOT / CONFIGS[name])]
        command += [f"--{key}={value}" for key, value in settings.items()]
        log = open(folder / "train.log", "w")  # noqa: SIM115 - closed below, after the process ends
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    columns = (TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        tasks = {name: progress.add_task(name, total=steps, info="") for name in runs}
        while any(p.poll() is None for p, _ in processes.values()):
            for name, folder in runs.items():
                rows = read_jsonl(folder / "metrics.jsonl")
                if rows:
                    last = rows[-1]
                    info = f"reward {last['reward']:.3f}  entropy {last.get('entropy', float('nan')):.3f}"
                    progress.update(tasks[name], completed=last["step"], info=info)
            time.sleep(1.0)
    for name, (process, log) in processes.items():
        log.close()
        if process.returncode != 0:
            tail = (runs[name] / "train.log").read_text()[-2000:]
            raise RuntimeError(f"the {name} run failed (exit {process.returncode}); end of {runs[name] / 'train.log'}:\n{tail}")


@dataclass(frozen=True)
class HeadlineRow:
    """One model of the headline table, from an evaluation of one run."""

    label: str
    step: int
    n: int
    pass_at_1: float
    pass_at_n: float
    distinct: float


def headline_rows(runs: dict[str, Path]) -> list[HeadlineRow]:
    """Base model (GRPO's step-0 evaluation), GRPO and SPS (their last evaluations)."""
    rows = []
    for label, name, which in (("base", "grpo", 0), ("GRPO", "grpo", -1), ("SPS", "sps", -1)):
        folder = sorted((runs[name] / "evals").glob("step_*"))[which]
        m = json.loads((folder / "metrics.json").read_text())
        n = m["n"]
        rows.append(
            HeadlineRow(label, int(folder.name.split("_")[1]), n, m["pass_at_k"]["1"], m["pass_at_k"][str(n)], m["distinct_correct_per_solved"] or 0.0)
        )
    return rows


def stalled(log: list[dict], window: int = 5, zero_std: float = 0.9) -> str | None:
    """Why a run stopped learning, judged on its last `window` steps, or None if it did not:
    nearly every group without reward variance (no RL signal left), or the reward collapsed
    to under a third of its first steps' level."""
    if len(log) < 2 * window:
        return None
    first = sum(r["reward"] for r in log[:window]) / window
    last = log[-window:]
    reward = sum(r["reward"] for r in last) / window
    no_variance = sum(r["frac_reward_zero_std"] for r in last) / window
    if no_variance >= zero_std:
        return f"{no_variance:.0%} of its groups had no reward variance over the last {window} steps (reward {reward:.3f}), so it had nothing left to learn from"
    if reward < first / 3:
        return f"its training reward collapsed from {first:.3f} to {reward:.3f}"
    return None


def headline(rows: list[HeadlineRow], stalls: dict[str, str | None]) -> str:
    """One sentence on what the table shows, plus a warning for each run that stopped learning."""
    base, grpo, sps = rows
    n = grpo.n
    if grpo.pass_at_1 > base.pass_at_1 and sps.pass_at_n > grpo.pass_at_n:
        text = (
            f"GRPO raised Pass@1 over the base model ({base.pass_at_1:.3f} -> {grpo.pass_at_1:.3f}) and "
            f"{'lost' if grpo.pass_at_n < base.pass_at_n else 'changed'} Pass@{n} ({base.pass_at_n:.3f} -> {grpo.pass_at_n:.3f}); "
            f"SPS kept more of Pass@{n} ({sps.pass_at_n:.3f}) at Pass@1 {sps.pass_at_1:.3f}."
        )
    else:
        failed = []
        if grpo.pass_at_1 <= base.pass_at_1:
            failed.append(f"GRPO did not raise Pass@1 over the base model ({base.pass_at_1:.3f} -> {grpo.pass_at_1:.3f})")
        if sps.pass_at_n <= grpo.pass_at_n:
            failed.append(f"SPS did not keep more of Pass@{n} than GRPO ({sps.pass_at_n:.3f} vs {grpo.pass_at_n:.3f})")
        text = "This run does not show the expected effect: " + "; ".join(failed) + "."
    for name, why in stalls.items():
        if why:
            text += f"\nWARNING: the {name} run stopped learning: {why}. Its numbers say little about the method."
    return text


def print_headline(runs: dict[str, Path]) -> None:
    """The headline table of base model, GRPO and SPS on held-out problems, and what it shows."""
    rows = headline_rows(runs)
    print("\n| model | Pass@1 | Pass@n | n | distinct correct per solved problem |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.label} (step {r.step}) | {r.pass_at_1:.3f} | {r.pass_at_n:.3f} | {r.n} | {r.distinct:.2f} |")
    stalls = {name: stalled(read_jsonl(folder / "metrics.jsonl")) for name, folder in runs.items()}
    print("\n" + headline(rows, stalls))

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
# About 3 minutes: a shorter-trained testbed (Pass@1 ~0.03 rather than ~0.12) and a few steps.
# The tests run it and share its testbed.
QUICK = DemoPlan(
    testbed=TestbedConfig(steps=400, warmup_steps=30),
    train={
        "max_steps": 12, "prompts_per_step": 16, "num_generations": 8, "eval_every": 6, "eval_benchmark": "countdown-test",
        "eval_limit": 60, "eval_n": 16, "save_every": 6, "train_size": 128, "probe_problems": 8, "learning_rate": 5e-4,
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


def print_headline(runs: dict[str, Path]) -> None:
    """Base model, GRPO and SPS on the held-out problems, from the runs' first and last evaluations."""
    print("\n| model | Pass@1 | Pass@n | n | distinct correct per solved problem |")
    print("|---|---|---|---|---|")
    for label, name, which in (("base", "grpo", 0), ("GRPO", "grpo", -1), ("SPS", "sps", -1)):
        folder = sorted((runs[name] / "evals").glob("step_*"))[which]
        m = json.loads((folder / "metrics.json").read_text())
        n = str(m["n"])
        step = int(folder.name.split("_")[1])
        print(f"| {label} (step {step}) | {m['pass_at_k']['1']:.3f} | {m['pass_at_k'][n]:.3f} | {n} | {m['distinct_correct_per_solved'] or 0:.2f} |")

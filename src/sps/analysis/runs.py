"""A training run folder as `sps analyze` reads it: settings, per-step log, evaluations and probes
(the layout is sps.training.run's)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from sps.evaluation.metrics import bootstrap_ci, correct_counts, pass_at_k_array
from sps.io import read_jsonl


@dataclass
class Checkpoint:
    """One evaluation of a run, read from evals/step_N/."""

    step: int
    metrics: dict  # metrics.json
    settings: dict  # settings.json
    correct: dict[str, int]  # problem id -> correct samples among the n, from samples.jsonl

    @property
    def n(self) -> int:
        return self.metrics["n"]

    def curve(self) -> dict[int, float]:
        """The Pass@k curve {k: Pass@k} at every k the evaluation reports."""
        return {int(k): value for k, value in self.metrics["pass_at_k"].items()}

    def pass_at(self, k: int) -> tuple[float, list[float]] | None:
        """Pass@k with its 95% interval over problems, None when k > n. A k that metrics.json does
        not list is computed from the correct counts."""
        if k > self.n:
            return None
        if str(k) in self.metrics["pass_at_k"]:
            return self.metrics["pass_at_k"][str(k)], self.metrics["pass_at_k_ci"][str(k)]
        correct = np.array(list(self.correct.values()))
        per_problem = pass_at_k_array(np.full(len(correct), self.n), correct, k)
        return float(per_problem.mean()), bootstrap_ci(per_problem).tolist()


@dataclass
class Run:
    """A training run folder: its name in the report, settings, per-step log, evaluations (by step) and probes."""

    name: str
    config: dict  # config.yaml
    log: list[dict]  # metrics.jsonl rows
    checkpoints: list[Checkpoint]
    probes: list[dict]  # probes.jsonl rows: step, probe, mean_logp

    @property
    def label(self) -> str:
        """The name, with the algorithm unless the name already says it."""
        algorithm = self.config.get("algorithm", "?")
        return self.name if algorithm in self.name else f"{self.name} ({algorithm})"

    @property
    def base(self) -> Checkpoint | None:
        """The evaluation of the starting model (step 0), if the run has one."""
        return self.checkpoints[0] if self.checkpoints[0].step == 0 else None



def load_run(run_dir: Path, name: str) -> Run:
    """Read a run folder; ValueError naming the folder and what it lacks."""
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder")
    for file, what in (("config.yaml", "the run's settings"), ("metrics.jsonl", "the per-step training log")):
        if not (run_dir / file).is_file():
            raise ValueError(f"{run_dir} has no {file} ({what}); is it a run folder written by sps train?")
    log = read_jsonl(run_dir / "metrics.jsonl")
    if not log:
        raise ValueError(f"{run_dir}: metrics.jsonl holds no training step yet")
    evaluations = sorted(run_dir.glob("evals/step_*/metrics.json"))
    if not evaluations:  # several eval benchmarks: the report follows the first one
        listed = sorted(run_dir.glob("evals/step_*/benchmarks.json"))
        evaluations = [f.parent / json.loads(f.read_text())["benchmarks"][0] / "metrics.json" for f in listed]
    if not evaluations:
        raise ValueError(f"{run_dir} has no evaluations (evals/step_*/metrics.json); train with eval_every >= 0")
    return Run(
        name=name,
        config=yaml.safe_load((run_dir / "config.yaml").read_text()) or {},
        log=sorted(log, key=lambda row: row["step"]),
        checkpoints=sorted((load_checkpoint(f.parent) for f in evaluations), key=lambda c: c.step),
        probes=read_jsonl(run_dir / "probes.jsonl"),
    )


def load_checkpoint(folder: Path) -> Checkpoint:
    try:
        ids, _, correct = correct_counts(read_jsonl(folder / "samples.jsonl"))
    except ValueError as e:  # no samples, or unequal sample counts
        raise ValueError(f"{folder}/samples.jsonl: {e}") from e
    return Checkpoint(
        step=int((folder if folder.name.startswith("step_") else folder.parent).name.removeprefix("step_")),
        metrics=json.loads((folder / "metrics.json").read_text()),
        settings=json.loads((folder / "settings.json").read_text()),
        correct=dict(zip(ids, correct.tolist())),
    )

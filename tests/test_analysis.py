"""`sps analyze`: the upper-bound quantities on hand cases, and the report on synthetic run folders
written in the real formats (metrics.json computed by compute_metrics from the samples)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sps.analysis.report import analyze, default_ks, probe_groups
from sps.analysis.runs import load_run
from sps.analysis.upper_bound import base_model_bound, coverage_ceiling, envelope
from sps.evaluation.metrics import compute_metrics, pass_at_k_array
from sps.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

PROBLEMS = 24
FIGURES = ["pass_at_k_vs_k.png", "pass_at_k_vs_step.png", "probes.png", "squeezing.png", "upper_bound.png"]


def checkpoint_samples(rng: np.random.Generator, accuracy: np.ndarray, sharpness: float, n: int) -> list[dict]:
    """n samples per problem, correct with the problem's accuracy; a correct one is one of four
    solutions weighted exp(-sharpness * j), so a larger sharpness leaves fewer distinct ones."""
    solution_weights = np.exp(-sharpness * np.arange(4))
    rows = []
    for p, acc in enumerate(accuracy):
        for i in range(n):
            correct = bool(rng.random() < acc)
            solution = rng.choice(4, p=solution_weights / solution_weights.sum()) if correct else rng.integers(50)
            rows.append({
                "problem_id": f"q{p:02d}", "sample_index": i, "completion": f"{'solution' if correct else 'attempt'} {solution}",
                "extracted": str(p) if correct else f"wrong {solution % 3}", "correct": correct, "status": "ok",
                "num_tokens": 20, "finish_reason": "stop",
            })
    return rows


def write_run(folder: Path, algorithm: str, *, seed: int, n: int = 16, steps=(0, 10, 20, 30), probes: bool = True) -> Path:
    """A run folder as `sps train` writes it. Every run shares the base model (step 0); GRPO
    squeezes (rare problems and solutions lose mass), SPS less so."""
    squeeze = 1.0 if algorithm == "grpo" else 0.3
    base_accuracy = np.random.default_rng(0).beta(0.6, 1.5, size=PROBLEMS)
    last = steps[-1]
    for step in steps:
        t = step / last
        accuracy = np.where(base_accuracy < 0.1, base_accuracy * (1 - squeeze * t), base_accuracy ** (1 - 0.6 * t))
        rng = np.random.default_rng([seed, step] if step else 0)
        samples = checkpoint_samples(rng, accuracy, 0.3 + 2 * squeeze * t, n)
        folder_step = folder / "evals" / f"step_{step:06d}"
        atomic_write_jsonl(folder_step / "samples.jsonl", samples)
        atomic_write_json(folder_step / "metrics.json", compute_metrics(samples, ci_resamples=100, maj_subsets=10))
        settings = {"model": f"tiny@step{step}", "benchmark": "countdown-val", "n": n, "temperature": 1.0, "seed": 0}
        atomic_write_json(folder_step / "settings.json", settings)

    rng = np.random.default_rng(seed)
    log = []
    for step in range(1, last + 1):
        t = step / last
        log.append({
            "step": step,
            "phase": "rl" if algorithm == "grpo" or step % 3 else "irl",
            "reward": 0.3 + 0.3 * t + rng.normal(0, 0.03),
            "entropy": 0.2 + 0.8 * math.exp(-3 * squeeze * t) + rng.normal(0, 0.03),
            "logp/correct": -0.8 + 0.6 * squeeze * t + rng.normal(0, 0.05),
            "logp/incorrect": -1.2 + 0.2 * t + rng.normal(0, 0.05),
            "distinct_correct_per_prompt": 1 + 3 * (1 - squeeze * t) + rng.normal(0, 0.2),
            "top1_share": 0.35 + 0.55 * squeeze * t + rng.normal(0, 0.03),
            "loss": rng.normal(0, 0.1),
            "time/step": 1.0,
        })
    log[0]["logp/correct"] = float("nan")  # no correct rollout in the first batch
    atomic_write_text(folder / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in log))
    config = {"model": "tiny", "algorithm": algorithm, "max_steps": last, "learning_rate": 1e-6, "eval_n": n,
              "output_dir": str(folder), "sps": {"schedule": "cycle", "irl_mode": "pull", "reshape_strength": 1.0}}
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(config))
    if probes:
        start = np.linspace(-2.5, -0.6, 9)  # mean token log-likelihoods, nats
        rows = [{"step": step, "probe": i, "mean_logp": float(logp + step / last * (squeeze * 0.5 * (logp + 1.4) + 0.05))}
                for step in steps for i, logp in enumerate(start)]
        atomic_write_jsonl(folder / "probes.jsonl", rows)
    return folder


def test_envelope_is_the_best_pass_at_k_over_checkpoints_at_each_k():
    curves = [{1: 0.2, 2: 0.3, 4: 0.5}, {1: 0.4, 2: 0.45, 4: 0.48}, {1: 0.1, 2: 0.5}]
    assert envelope(curves) == {1: 0.4, 2: 0.5, 4: 0.5}
    with pytest.raises(ValueError):
        envelope([])


def test_coverage_ceiling_counts_a_problem_solved_at_a_single_checkpoint():
    base = {"a": 0, "b": 3, "c": 0}
    later = {"a": 1, "b": 0, "c": 0}  # a: solved only here; b: solved only at the base
    assert coverage_ceiling([base, later]) == pytest.approx(2 / 3)
    assert coverage_ceiling([{"a": 0}]) == 0.0


def test_base_model_bound_is_pass_at_the_largest_k():
    assert base_model_bound({1: 0.1, 8: 0.4, 4: 0.3}) == (8, 0.4)


def test_default_ks_are_one_the_middle_power_of_two_and_n():
    assert default_ks(128) == [1, 16, 128]
    assert default_ks(8) == [1, 4, 8]
    assert default_ks(1) == [1]


def test_probes_are_grouped_by_their_step_0_likelihood():
    rows = [{"step": s, "probe": i, "mean_logp": -i + s} for s in (0, 5) for i in range(6)]
    groups = probe_groups(rows)
    assert list(groups) == ["rare", "middle", "likely"]
    steps, means, size = groups["rare"]
    assert steps.tolist() == [0, 5] and means.tolist() == [-4.5, 0.5] and size == 2


def test_report_of_grpo_vs_sps(tmp_path):
    runs = [write_run(tmp_path / "grpo", "grpo", seed=1), write_run(tmp_path / "sps", "sps", seed=2)]
    out = analyze(runs, tmp_path / "report", ks=[1, 3, 16])

    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, "report.html", "report.md"])
    report = (out / "report.md").read_text()
    assert "| quantity | grpo | sps |" in report
    assert "All runs share the same base-model evaluation" in report
    assert "All evaluations share their settings" in report
    for figure in FIGURES:
        assert f"]({figure})" in report

    # The upper-bound rows hold the quantities computed from the run's files.
    grpo = load_run(runs[0], "grpo")
    ceiling = coverage_ceiling([c.correct for c in grpo.checkpoints])
    pass_16 = max(c.curve()[16] for c in grpo.checkpoints)
    assert f"| coverage ceiling | {ceiling:.1%} |" in report
    assert f"| envelope Pass@16 | {pass_16:.1%} |" in report
    assert f"| base-model bound | {grpo.base.curve()[16]:.1%} (Pass@16) |" in report

    # Pass@3 is not in metrics.json: it is computed from the correct counts.
    last = grpo.checkpoints[-1]
    c = np.array(list(last.correct.values()))
    assert last.pass_at(3)[0] == pytest.approx(pass_at_k_array(np.full(len(c), 16), c, 3).mean())
    assert "| step | Pass@1 | Pass@3 | Pass@16 | Avg@n |" in report

    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "<td>grpo</td>" in page


def test_runs_that_differ_in_n_and_lack_probes_are_reported_so(tmp_path):
    runs = [write_run(tmp_path / "a", "grpo", seed=1, n=8, probes=False), write_run(tmp_path / "b", "sps", seed=2, probes=False)]
    out = analyze(runs, tmp_path / "report")
    report = (out / "report.md").read_text()
    assert "n: a 8; b 16" in report
    assert "No probes in a, b" in report
    assert not (out / "probes.png").exists()


def test_one_run_reports_into_its_folder(tmp_path):
    run = write_run(tmp_path / "grpo", "grpo", seed=1, steps=(0, 5))
    assert analyze([run]) == run / "analysis"
    assert (run / "analysis" / "report.html").is_file()


def test_a_folder_without_evaluations_or_log_is_refused_by_name(tmp_path):
    run = write_run(tmp_path / "run", "grpo", seed=1, steps=(0, 5))
    for folder in (run / "evals").iterdir():
        (folder / "metrics.json").unlink()
    with pytest.raises(ValueError, match=f"{run}.*no evaluations"):
        analyze([run], tmp_path / "report")
    (run / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match=f"{run}.*metrics.jsonl"):
        analyze([run], tmp_path / "report")

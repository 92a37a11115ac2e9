from __future__ import annotations

import json

import numpy as np

from sps.evaluation.metrics import compute_metrics
from sps.evaluation.report import combined_table, write_report


def sample_rows(num_problems: int, n: int, seed: int = 0) -> list[dict]:
    """Samples whose per-problem accuracy ranges from 0 to 0.6, with a few wrong-answer clusters."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(num_problems):
        accuracy = 0.6 * p / num_problems
        for i in range(n):
            correct = bool(rng.random() < accuracy)
            rows.append(
                {
                    "problem_id": f"q{p:03d}",
                    "sample_index": i,
                    "completion": f"solution {rng.integers(3)} \\boxed{{{p if correct else i % 3}}}",
                    "extracted": str(p) if correct else str(i % 3),
                    "correct": correct,
                    "status": "ok" if i % 10 else "no_answer",
                    "num_tokens": int(rng.integers(50, 200)),
                    "finish_reason": "stop" if i % 7 else "length",
                }
            )
    return rows


def test_write_report_writes_all_files(tmp_path):
    metrics = compute_metrics(sample_rows(40, 16))
    settings = {"model": "tiny", "temperature": 0.7, "n": 16, "stop": ["</s>"]}
    write_report(tmp_path, metrics, "Testbed: tiny model", settings)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "pass_at_k.png", "report.md"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (tmp_path / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Testbed: tiny model\n")
    assert "| k | Pass@k | 95% CI | Maj@k | 95% CI |" in report
    assert f"| 16 | {100 * metrics['pass_at_k']['16']:.1f}% |" in report
    assert "**Avg@16**" in report
    assert "| no_answer |" in report
    assert '- `stop`: ["</s>"]' in report


def test_write_report_replaces_existing_files(tmp_path):
    first = compute_metrics(sample_rows(10, 4, seed=1))
    second = compute_metrics(sample_rows(10, 4, seed=2))
    write_report(tmp_path, first, "run", {})
    write_report(tmp_path, second, "run", {})
    assert json.loads((tmp_path / "metrics.json").read_text()) == second
    assert len(list(tmp_path.iterdir())) == 3  # no temporary files left behind


def test_combined_table():
    results = {"math": compute_metrics(sample_rows(10, 16)), "aime": compute_metrics(sample_rows(6, 4))}
    table = combined_table(results).splitlines()
    assert table[0] == "| benchmark | problems | n | Avg@n | Pass@1 | Pass@4 | Pass@n |"
    math_row = table[2].split(" | ")
    assert math_row[0] == "| math" and math_row[1:3] == ["10", "16"]
    assert math_row[-1] == f"{100 * results['math']['pass_at_k']['16']:.1f}% |"
    assert table[3].startswith("| aime | 6 | 4 |")
    # Pass@16 is beyond aime's n = 4 when asked for.
    assert combined_table(results, ks=[16]).splitlines()[3].split(" | ")[5] == "–"

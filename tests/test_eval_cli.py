"""`sps eval` and `sps grade` end to end on a tiny local model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_thread

from sps.cli import main
from sps.evaluation.metrics import compute_metrics
from sps.io import read_jsonl

EVAL = ["eval", "--benchmark", "countdown-test", "--temperature", "1.0", "--max-new-tokens", "32"]


def run_eval(model, out, *extra):
    return main([*EVAL, "--model", str(model), "--out", str(out), *extra])


def test_eval_writes_all_outputs_and_metrics_follow_from_the_samples(random_llama, tmp_path):
    assert run_eval(random_llama, tmp_path, "--limit", "6", "--n", "4") == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"samples.jsonl", "metrics.json", "report.md", "pass_at_k.png", "settings.json"}
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == 24
    assert set(samples[0]) >= {"problem_id", "sample_index", "completion", "extracted", "correct", "status", "num_tokens", "finish_reason"}
    stored = json.loads((tmp_path / "metrics.json").read_text())
    stored.pop("skipped_rows")
    assert compute_metrics(samples) == stored
    assert stored["n"] == 4 and set(stored["pass_at_k"]) == {"1", "2", "4"}


def test_other_settings_are_refused_unless_overwritten(random_llama, tmp_path, capsys):
    assert run_eval(random_llama, tmp_path, "--limit", "2", "--n", "2") == 0
    assert run_eval(random_llama, tmp_path, "--limit", "2", "--n", "3") == 2
    assert "n: 2 there, 3 now" in capsys.readouterr().err
    assert run_eval(random_llama, tmp_path, "--limit", "2", "--n", "3", "--overwrite") == 0
    assert len(read_jsonl(tmp_path / "samples.jsonl")) == 6


def test_several_benchmarks_get_a_folder_each_and_a_summary(random_llama, tmp_path):
    args = ["eval", "--model", str(random_llama), "--benchmark", "countdown-test,countdown-val", "--limit", "2", "--n", "2",
            "--temperature", "1.0", "--max-new-tokens", "32", "--out", str(tmp_path)]
    assert main(args) == 0
    assert (tmp_path / "countdown-test" / "metrics.json").is_file() and (tmp_path / "countdown-val" / "metrics.json").is_file()
    assert "countdown-val" in (tmp_path / "summary.md").read_text()


def test_clear_errors_for_a_missing_model_and_an_unknown_benchmark(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--benchmark", "countdown-test"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--benchmark", "nobench"]) == 2
    assert "unknown benchmark 'nobench'" in capsys.readouterr().err


def test_killed_eval_resumes_to_exactly_limit_times_n_samples(random_llama, tmp_path):
    command = [sys.executable, "-m", "sps.cli", *EVAL, "--model", str(random_llama), "--out", str(tmp_path),
               "--limit", "40", "--n", "8", "--batch-size", "16"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = tmp_path / "samples.jsonl"
    deadline = time.monotonic() + 120
    while not (samples.exists() and len(read_jsonl(samples)) >= 48):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(read_jsonl(samples))
    assert done_before < 320
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = read_jsonl(samples)
    keys = [(r["problem_id"], r["sample_index"]) for r in rows]
    assert len(rows) == 320 and len(set(keys)) == 320
    assert rows[:done_before] == read_jsonl(samples)[:done_before]  # nothing before the kill was redone


def test_grade_prints_the_verdict_as_json(capsys):
    assert main(["grade", "--gold", "\\frac{1}{2}", "--completion", "so it is \\boxed{0.5}"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["correct"] is True and verdict["status"] == "ok" and verdict["extracted"] == "0.5"


@pytest.mark.parametrize("text, status", [("no answer here", "no_answer"), ("\\boxed{7}", "ok")])
def test_grade_reads_a_completion_file(tmp_path, capsys, text, status):
    path = tmp_path / "completion.txt"
    path.write_text(text)
    assert main(["grade", "--gold", "8", "--completion-file", str(path)]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == status and verdict["correct"] is False


@pytest.mark.slow
@pytest.mark.multiprocess
def test_eval_under_torchrun_shares_the_batches_and_writes_one_processs_samples(random_llama, tmp_path):
    import shutil

    # 6 batches, 3 a process; torchrun would take --n for an abbreviation of its own options
    args = [*EVAL, "--model", str(random_llama), "--limit", "6", "--samples", "4", "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    two = subprocess.run([launcher, "--nproc_per_node", "2", "--master_port", "29541", "-m", "sps.cli", *args, "--out",
                          str(tmp_path / "two")], check=True, env=env, capture_output=True, text=True, timeout=300)
    assert two.stdout.count("results in") == 1  # the main process reports
    with one_thread():
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    rows = {name: read_jsonl(tmp_path / name / "samples.jsonl") for name in ("one", "two")}
    assert len(rows["two"]) == 24
    key = lambda r: (r["problem_id"], r["sample_index"])  # noqa: E731
    assert sorted(rows["two"], key=key) == sorted(rows["one"], key=key)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text()) == json.loads((tmp_path / "one" / "metrics.json").read_text())

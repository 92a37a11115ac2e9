"""bench/gpu_check.py: its help, and its CPU fallback end to end with tiny shapes."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_documents_the_check(capsys):
    with pytest.raises(SystemExit) as done:
        load_script().parse_args(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("testbed GRPO and SPS", "Qwen2.5-Math-1.5B-shaped", "64 x 1k tokens", "memory estimate", "--cpu-smoke"):
        assert phrase in text, phrase


def test_cpu_smoke_writes_json_and_markdown(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--cpu-smoke", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    runs = result["testbed"]
    assert [(r["algorithm"], r["dtype"], r["device"]) for r in runs] == [
        ("grpo", "bfloat16", "cpu"), ("sps", "bfloat16", "cpu"), ("grpo", "float32", "cpu"), ("sps", "float32", "cpu"), ("grpo", "float32", "cpu")
    ]
    assert all(r["finite_losses"] and r["seconds_per_step"] > 0 for r in runs)
    assert all(r["speedup_vs_cpu"] > 0 for r in runs[:-1])
    for step in result["training_steps"]:
        assert step["tokens_per_second"] > 0 and step["estimated_peak_gib"] > 0 and step["mfu"] is None
    steps = [(r["completion_tokens"], r["logits"]) for r in result["training_steps"]]
    assert steps == [(32, "chunked"), (32, "whole"), (96, "chunked"), (96, "whole")]
    rollout = result["rollout"]
    assert rollout["sequences"] == 4 and 0 < rollout["generated"] <= 4 * 16 and math.isfinite(rollout["tokens_per_second"])
    assert "## (a) testbed training" in (tmp_path / "gpu_check.md").read_text()


def test_without_a_gpu_the_full_check_refuses(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert load_script().main(["--out", str(tmp_path)]) == 2
    assert "--cpu-smoke" in capsys.readouterr().err

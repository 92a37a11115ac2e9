"""The first-hour examples as a newcomer copies them: examples/first_hour.py (the Python API) and
examples/first_hour.sh (the command line), each run whole in a fresh folder on SmolLM2-135M-Instruct."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sps.io import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "SPS": str(Path(sys.executable).with_name("sps"))}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_python_example_trains_sps_with_lora_on_own_data_and_evaluates_before_and_after(tmp_path):
    out = run([sys.executable, str(EXAMPLES / "first_hour.py")], tmp_path)
    assert out.strip().splitlines()[-1].startswith("mean reward ")
    folder = tmp_path / "out" / "first_hour"
    assert len(read_jsonl(folder / "eval_trained" / "samples.jsonl")) == 8 * 4
    assert [r["step"] for r in read_jsonl(folder / "run" / "metrics.jsonl")] == list(range(1, 7))
    assert (folder / "run" / "checkpoints" / "step_000006" / "adapter_model.safetensors").is_file()


def test_the_command_line_example_does_the_same(tmp_path):
    run(["bash", str(EXAMPLES / "first_hour.sh")], tmp_path)
    folder = tmp_path / "out" / "first_hour_cli"
    assert len(read_jsonl(folder / "eval_trained" / "samples.jsonl")) == 8 * 4
    phases = {r["phase"] for r in read_jsonl(folder / "run" / "metrics.jsonl")}
    assert phases == {"rl", "irl"}  # SPS: both kinds of step

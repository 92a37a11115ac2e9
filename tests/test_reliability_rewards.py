"""Reward functions that misbehave (issue 41, item 6): one that fills memory, one that ends its
process at import, a run killed while one runs, and a stuck run resumed with tighter limits. Each
case asserts the exit code, the one-line message, and that no step is lost or run twice."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from test_grading_pool import killed_once
from test_reliability import EVAL, config_file, error_of, settings, train_command
from test_train import rows

from sps.cli import main
from sps.grading.rewards import RewardFunctions
from sps.tasks.problem import Problem

pytestmark = pytest.mark.long  # real training runs and processes: the second stage of `make test`

# Logs each call's rows, then takes 1 GiB (address space only: bytes() of zeros is not touched) and
# scores a '7'; bounded, so that without a working limit it returns rather than fill the host.
LEAKY = '''
from pathlib import Path

def reward(completions, id, **_):
    with open(Path(__file__).parent / "calls.txt", "a") as log:
        log.write(id[0] + "\\n")
    hoard = [bytes(16 << 20) for _ in range(64)]
    del hoard
    return [float("7" in c) for c in completions]
'''

# Hangs while the file "hang" is next to it (marking that a call started), else scores a '7'.
SLEEPY = '''
import time
from pathlib import Path

def reward(completions, **_):
    here = Path(__file__).parent
    if (here / "hang").exists():
        (here / "started").write_text("")
        time.sleep(60)
    return [float("7" in c) for c in completions]
'''


# torch's allocator says it is out of memory with a RuntimeError, not a MemoryError.
TORCH_3_GIB = '''
def reward(completions, **_):
    import torch

    torch.empty(3 << 30, dtype=torch.uint8)  # never touched: address space only
    return [1.0] * len(completions)
'''


def reward_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name / "reward.py"
    path.parent.mkdir()
    path.write_text(text)
    return f"{path}:reward"


def test_a_reward_over_its_memory_limit_is_named_and_a_higher_limit_resumes_the_run(random_llama, tmp_path, capsys):
    run_dir, spec = tmp_path / "run", reward_file(tmp_path, "leaky", LEAKY)
    tight = config_file(tmp_path, "tight", **settings(random_llama, run_dir, reward_funcs=[spec], reward_memory_limit=0.25))
    assert main(["train", "--config", str(tight)]) == 2
    message = error_of(capsys)
    assert message.startswith(f"sps train: error: step 1: 4 reward failure(s), more than max_reward_failures (0); first: reward function {spec} on row ")
    assert message.endswith(": went over reward_memory_limit (item 0: exceeded the 0.25 GiB memory limit)")
    calls = (tmp_path / "leaky" / "calls.txt").read_text().split()
    assert len(calls) == len(set(calls)) == 4, "each of the step's 4 prompts called once, each in a fresh worker"
    assert not (run_dir / "metrics.jsonl").exists() or not rows(run_dir)  # no step logged
    # The same run with room for the 1 GiB: the limit may change on resume, and the log says so.
    roomy = config_file(tmp_path, "roomy", **settings(random_llama, run_dir, reward_funcs=[spec], reward_memory_limit=2))
    assert main(["train", "--config", str(roomy)]) == 0
    assert "NOTICE: reward_memory_limit changed from 0.25 to 2.0" in capsys.readouterr().out
    log = rows(run_dir)
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["reward/failures"] == 0 for r in log)
    assert log[0]["notices"] == ["reward_memory_limit changed from 0.25 to 2.0"]


def test_torch_out_of_memory_is_named_as_the_limit_and_4_gib_leave_room_for_3(tmp_path):
    spec = reward_file(tmp_path, "torch", TORCH_3_GIB)
    problems = [Problem("p1", "q", "7")] * 2
    for limit, rewards, failures in ((1.0, [math.nan] * 2, [f"reward function {spec} on row 'p1': went over reward_memory_limit "
                                                           "(item 0: exceeded the 1 GiB memory limit)"]),
                                     (4.0, [1.0, 1.0], [])):
        scorer = RewardFunctions([spec], memory_limit_gib=limit)
        try:
            scores = scorer.score(["q", "q"], ["a", "b"], [[1], [2]], problems, 2)
        finally:
            scorer.close()
        assert scores.failures == failures
        assert scores.rewards == pytest.approx(rewards, nan_ok=True)


def test_sps_eval_takes_the_reward_limits_and_names_a_call_over_the_memory_limit(random_llama, tmp_path, capsys):
    spec, out = reward_file(tmp_path, "leaky", LEAKY), tmp_path / "eval"
    command = ["eval", "--model", str(random_llama), *EVAL, "--limit", "2", "--max-new-tokens", "8", "--reward-funcs", spec,
               "--out", str(out)]
    assert main([*command, "--reward-memory-limit", "0"]) == 2
    assert error_of(capsys) == "sps eval: error: reward_memory_limit must be a positive number of GiB (got 0.0)"
    assert main([*command, "--reward-memory-limit", "0.25", "--reward-timeout", "30"]) == 2
    assert error_of(capsys).endswith(": went over reward_memory_limit (item 0: exceeded the 0.25 GiB memory limit)")
    assert not (out / "samples.jsonl").exists() or not (out / "samples.jsonl").read_text()  # nothing scored 0 and kept
    assert main([*command, "--reward-memory-limit", "2"]) == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len({(s["problem_id"], s["sample_index"]) for s in samples}) == 2 * 2


def test_a_non_positive_memory_limit_is_refused_before_any_work(random_llama, tmp_path, capsys):
    config = config_file(tmp_path, "bad", **settings(random_llama, tmp_path / "run", reward_memory_limit=-1))
    assert main(["train", "--config", str(config)]) == 2
    assert error_of(capsys) == "sps train: error: config: reward_memory_limit must be a positive number of GiB (got -1.0)"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("code", "ending"), [
    ("import os\nos._exit(3)", "exit code 3"),
    ("import ctypes\nctypes.string_at(0)", "exit code -11"),  # a segmentation fault
])
def test_a_reward_file_that_ends_its_process_at_import_is_one_line_with_exit_code_2(random_llama, tmp_path, code, ending):
    spec = reward_file(tmp_path, "bad", code + "\n\ndef reward(completions, **_):\n    return [0.0] * len(completions)\n")
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, "run", **settings(random_llama, run_dir, reward_funcs=[spec]))
    done = subprocess.run(train_command(config), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"sps train: error: reward function {spec!r}: importing it ended its worker process (item 0: worker process "
        f"died ({ending})); its file or module must not exit, crash or hang when imported"
    ]
    assert not run_dir.exists()  # refused before the run folder was touched


def test_a_killed_run_leaves_no_reward_worker_and_the_rerun_resumes(random_llama, tmp_path):
    run_dir, spec = tmp_path / "run", reward_file(tmp_path, "sleepy", SLEEPY)
    (tmp_path / "sleepy" / "hang").write_text("")
    config = config_file(tmp_path, "run", **settings(random_llama, run_dir, reward_funcs=[spec], max_steps=2))
    run = subprocess.Popen(train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    descendants, alive = killed_once(run, (tmp_path / "sleepy" / "started").exists, 180, 10)
    assert len(descendants) >= 2  # reward workers and multiprocessing's resource tracker
    assert not alive, "a process of the killed run is still alive"
    (tmp_path / "sleepy" / "hang").unlink()
    subprocess.run(train_command(config), check=True, capture_output=True, timeout=600)
    assert [r["step"] for r in rows(run_dir)] == [1, 2]


def test_a_run_resumes_with_another_reward_timeout_and_the_log_says_so(random_llama, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_file(tmp_path, "a", **settings(random_llama, run_dir, max_steps=2)))]) == 0
    shorter = config_file(tmp_path, "b", **settings(random_llama, run_dir, max_steps=4, reward_timeout=5))
    capsys.readouterr()
    assert main(["train", "--config", str(shorter)]) == 0
    out = capsys.readouterr().out
    assert "NOTICE: max_steps changed from 2 to 4" in out and "NOTICE: reward_timeout changed from 60.0 to 5.0" in out
    log = rows(run_dir)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert log[2]["notices"] == ["max_steps changed from 2 to 4", "reward_timeout changed from 60.0 to 5.0"]

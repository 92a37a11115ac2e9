"""`sps train` end to end on a tiny random model whose reward is a completion holding a '7'
(tests/fixtures/rewards.py, named by path as a user's own file is): files, learning, resume after
SIGKILL. The testbed's learning is the quick demo's test (tests/test_demo.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from sps.training.config import TrainConfig
from sps.training.trainer import train

TOY_REWARD = str(Path(__file__).parent / "fixtures" / "rewards.py") + ":contains_seven"


def tiny_run(model, output_dir, **changes) -> TrainConfig:
    cfg = TrainConfig(
        model=str(model),
        reward_funcs=[TOY_REWARD],
        train_size=64,
        prompts_per_step=8,
        num_generations=4,
        max_completion_length=32,
        learning_rate=1e-3,
        max_steps=4,
        eval_every=2,
        eval_limit=8,
        eval_n=4,
        probe_problems=4,
        save_every=2,
        output_dir=str(output_dir),
        threads=1,
    )
    return replace(cfg, **changes)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_its_log_evaluations_probes_and_checkpoints(random_llama, tmp_path):
    run_dir = train(tiny_run(random_llama, tmp_path / "run", keep_checkpoints=1), show_progress=False)
    log = rows(run_dir)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for key in ("reward", "entropy", "frac_reward_zero_std", "clip_ratio/region", "distinct_correct_per_prompt", "top1_share",
                "logp/correct", "completions/mean_length", "time/generate", "tokens_per_second/train", "loss", "grad_norm",
                "grading/no_answer_fraction", "grading/timeout_fraction"):
        assert all(key in r for r in log), key  # every step, even one whose fraction is 0
    assert sorted(p.name for p in (run_dir / "evals").iterdir()) == ["step_000000", "step_000002", "step_000004"]
    assert (run_dir / "evals" / "step_000004" / "metrics.json").is_file()
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_000004"]  # keep_checkpoints=1
    probes = [json.loads(line) for line in (run_dir / "probes.jsonl").read_text().splitlines()]
    assert {p["step"] for p in probes} == {0, 2, 4}


def test_bad_settings_fail_before_any_work(random_llama, tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        train(tiny_run(random_llama, tmp_path / "a", loss_type="mean"), show_progress=False)
    with pytest.raises(ValueError, match="num_generations"):
        train(tiny_run(random_llama, tmp_path / "b", num_generations=1), show_progress=False)
    with pytest.raises(ValueError, match="sps.irl_mode"):
        train(tiny_run(random_llama, tmp_path / "c", algorithm="sps", sps=replace(TrainConfig().sps, irl_mode="pushpull")), show_progress=False)
    assert not (tmp_path / "a").exists()


def test_a_folder_with_another_run_is_refused(random_llama, tmp_path):
    train(tiny_run(random_llama, tmp_path / "run", max_steps=1, eval_every=-1), show_progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train(tiny_run(random_llama, tmp_path / "run", max_steps=1, eval_every=-1, learning_rate=5e-4), show_progress=False)


def test_killed_run_resumes_without_repeating_or_skipping_a_step(random_llama, tmp_path):
    cfg = tiny_run(random_llama, tmp_path / "whole", max_steps=5, eval_every=-1, train_size=32, prompts_per_step=16, num_generations=8)
    whole = rows(train(cfg, show_progress=False))
    assert any(r["grad_norm"] > 0 for r in whole)  # the policy really changes between steps

    config_file = tmp_path / "killed.yaml"
    killed_dir = tmp_path / "killed"
    data = {k: v for k, v in asdict(replace(cfg, output_dir=str(killed_dir))).items() if not isinstance(v, dict)}  # sections keep their defaults
    config_file.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "sps.cli", "train", "--config", str(config_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    # Kill it once step 3 is logged: step 4 is then under way, and the newest checkpoint is step 2.
    while not ((killed_dir / "metrics.jsonl").exists() and len(rows(killed_dir)) >= 3):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir())[-1] in ("step_000002", "step_000004")

    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = rows(killed_dir)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5]
    for a, b in zip(whole, resumed):
        for key, value in a.items():
            if key.startswith(("time/", "tokens_per_second/")) or not isinstance(value, float):
                continue
            assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (a["step"], key)


def test_grpo_raises_the_reward_on_a_recurring_prompt_set(random_llama, tmp_path):
    # 32 problems revisited every other step, completions of at most 8 characters: the share holding
    # a '7' must clearly rise (measured: 0.37 over the first 5 steps to 0.81 over the last 5).
    cfg = tiny_run(random_llama, tmp_path / "run", train_size=32, prompts_per_step=16, num_generations=8,
                   max_completion_length=8, max_steps=20, eval_every=-1, probe_problems=0, save_every=100)
    log = rows(train(cfg, show_progress=False))
    first, last = log[:5], log[-5:]
    mean = lambda part: sum(r["reward"] for r in part) / len(part)  # noqa: E731
    assert mean(last) > mean(first) + 0.25, (mean(first), mean(last))


@pytest.mark.parametrize("variant", [{}, {"demo_weighting": "frequency", "irl_tokens": "fork"}])
def test_sps_alternates_rl_and_irl_steps_and_logs_its_demonstrations(random_llama, tmp_path, variant):
    # Every prompt recurs every step, so the buffer holds what earlier steps found.
    sps = replace(TrainConfig().sps, rl_steps=1, irl_steps=1, reuse_rollouts=False, demo_source="buffer", **variant)
    cfg = tiny_run(random_llama, tmp_path / "run", algorithm="sps", sps=sps, train_size=16, prompts_per_step=16,
                   num_generations=8, max_steps=6, eval_every=-1, probe_problems=0, save_every=100)
    log = rows(train(cfg, show_progress=False))
    assert [r["phase"] for r in log] == ["rl", "irl"] * 3
    irl_steps = [r for r in log if r["phase"] == "irl" and "irl/demos" in r]
    assert irl_steps, "no IRL step had demonstrations"
    for r in irl_steps:
        assert r["irl/demos"] >= r["irl/prompts_with_demos"] >= 1
        assert 1.0 <= r["irl/effective_demos"] <= r["irl/demos"]
        assert r["loss"] == r["loss"] and r["nonfinite_updates"] == 0  # a real, finite IRL update
        assert (r["irl/scoped_token_fraction"] < 1.0) == (sps.irl_tokens == "fork")
    assert all(r["buffer/prompts"] >= 1 for r in log[1:])


def test_adversarial_irl_trains_its_discriminator_and_a_resumed_run_repeats_the_uninterrupted_one(random_llama, tmp_path):
    sps = replace(TrainConfig().sps, rl_steps=1, irl_steps=1, demo_source="buffer", demo_weighting="adversarial")
    cfg = tiny_run(random_llama, tmp_path / "whole", algorithm="sps", sps=sps, train_size=8, prompts_per_step=8,
                   num_generations=8, max_steps=6, eval_every=-1, probe_problems=0, save_every=2)
    whole = rows(train(cfg, show_progress=False))
    irl = [r for r in whole if "irl/discriminator_loss" in r]
    assert len(irl) >= 2, "the discriminator trained on fewer than two IRL steps"
    assert all(r["nonfinite_updates"] == 0 for r in whole)
    assert irl[-1]["irl/discriminator_loss"] < irl[0]["irl/discriminator_loss"]  # 0.693 untrained: it learned
    halves = replace(cfg, output_dir=str(tmp_path / "halves"))
    train(replace(halves, max_steps=4), show_progress=False)
    resumed = rows(train(halves, show_progress=False))
    for key in ("irl/discriminator_loss", "irl/effective_demos", "loss"):
        assert [r.get(key, 0.0) for r in resumed] == pytest.approx([r.get(key, 0.0) for r in whole], rel=1e-6), key


def test_replay_control_adds_buffered_rows_to_the_rl_batch(random_llama, tmp_path):
    cfg = tiny_run(random_llama, tmp_path / "run", replay_buffer=True, train_size=16, prompts_per_step=16, num_generations=8,
                   max_steps=4, eval_every=-1, probe_problems=0, save_every=100)
    log = rows(train(cfg, show_progress=False))
    assert all(r["phase"] == "rl" for r in log)
    assert sum(r["replay/rows"] for r in log) >= 1  # trajectories found earlier and not sampled again

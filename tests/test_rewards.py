"""Rewards by reference (sps.grading.rewards): a user's file of functions, weights, None, every
column of the row, success at a threshold, and every failure named."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sps.algorithms.advantages import compute_advantages, grpo_advantages, passk_advantages
from sps.cli import main
from sps.grading.rewards import RewardError, RewardFunctions, check_failures
from sps.tasks.benchmarks import load_benchmark
from sps.tasks.problem import Problem
from sps.training.config import TrainConfig

FILE = Path(__file__).parent / "fixtures" / "rewards.py"


def spec(name: str) -> str:
    return f"{FILE}:{name}"


def score(names, completions, problems=None, weights=(), group_size=None, **options):
    problems = problems or [Problem("p1", "q", "127")] * len(completions)
    rewards = RewardFunctions(names, weights, **options)
    try:
        return rewards.score([p.problem for p in problems], completions, [[1, 2]] * len(completions), problems,
                             group_size or len(completions))
    finally:
        rewards.close()


def test_a_weighted_sum_of_a_users_function_and_a_grader_reaches_the_advantages():
    # digits_share: the share of "127"'s characters in the completion; countdown-style exact grading
    # is not needed: the second function is contains_seven, weight 0.5.
    completions = ["1", "12", "127", "x"]
    scores = score([spec("digits_share"), spec("contains_seven")], completions, weights=[1.0, 0.5])
    assert scores.rewards == pytest.approx([1 / 3, 2 / 3, 1 + 0.5, 0.0])
    rewards = torch.tensor([scores.rewards])
    cfg = TrainConfig(success_threshold=1.0)
    advantages, _ = compute_advantages(cfg, rewards, rewards >= 1.0, torch.zeros(1, 4), step=1)
    mean, std = 2.5 / 4, float(torch.tensor(scores.rewards).std())  # by hand: GRPO with the group's std
    expected = [(r - mean) / (std + 1e-4) for r in scores.rewards]
    assert advantages[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_none_means_the_function_does_not_apply_and_no_reward_at_all_is_a_failure():
    scores = score([spec("only_short"), spec("contains_seven")], ["17", "long seven 7", "long"])
    assert scores.rewards == pytest.approx([2.0, 1.0, 1.0])  # only_short applies to "17" and "long"
    alone = score([spec("only_short")], ["17", "longer than four"])
    assert alone.rewards[0] == 1.0 and math.isnan(alone.rewards[1])
    assert "no reward function applies" in alone.failures[0]


def test_every_column_of_a_jsonl_row_reaches_the_function(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "problem": "say x", "answer": "-", "solution": "x"},
        {"id": "b", "problem": "say y", "answer": "-", "solution": "y"},
    ]) + "\n")
    problems = load_benchmark(str(data)).problems
    scores = score([spec("sees_columns")], ["x!", "no"], problems=problems, group_size=1)
    assert scores.rewards == [1.0, 0.0] and not scores.failures


def test_a_binary_method_counts_success_at_the_threshold():
    rewards = torch.tensor([[0.5, 0.95, 0.2, 1.3]])
    success = rewards >= 0.9
    cfg = TrainConfig(advantage_estimator="passk", success_threshold=0.9, advantage=replace(TrainConfig().advantage, k=2))
    advantages, _ = compute_advantages(cfg, rewards, success, torch.zeros(1, 4), step=1)
    assert torch.allclose(advantages, passk_advantages(torch.tensor([[0.0, 1, 0, 1]]), 2))
    grpo, _ = compute_advantages(TrainConfig(), rewards, success, torch.zeros(1, 4), step=1)
    assert torch.allclose(grpo, grpo_advantages(rewards))  # a method defined on any reward keeps the values


@pytest.mark.parametrize(("name", "message"), [
    ("crashes", "raised RuntimeError: the checker broke"),
    ("hangs", "timed out"),
    ("too_few", "returned 1 values for 2 completions"),
    ("nan_reward", "returned nan, not a finite number"),
    ("words", "returned 'yes', not a finite number"),
])
def test_a_failing_function_is_named_with_its_row_and_never_scores_0(name, message):
    scores = score([spec(name)], ["a", "b"], timeout_s=1.0)
    assert all(math.isnan(r) for r in scores.rewards)
    assert len(scores.failures) == 1 and name in scores.failures[0] and "'p1'" in scores.failures[0]
    assert message in scores.failures[0]
    with pytest.raises(RewardError, match=name):
        check_failures(scores, 0, "step 1")
    check_failures(scores, 1, "step 1")  # max_reward_failures 1 lets it pass


@pytest.mark.parametrize(("names", "weights", "message"), [
    (["/nowhere/rewards.py:f"], (), "does not exist"),
    ([f"{FILE}:missing"], (), "has no function named 'missing'"),
    (["no_such_module_here:f"], (), "cannot import module"),
    (["mathh"], (), "neither a grader"),
    ([f"{FILE}:contains_seven"], (1.0, 2.0), "2 values for 1 reward_funcs"),
])
def test_bad_reward_settings_fail_at_once_naming_the_input(names, weights, message):
    with pytest.raises(ValueError, match=message):
        RewardFunctions(names, weights)


def test_eval_with_a_reward_function_records_rewards_and_counts_successes(random_llama, tmp_path):
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(random_llama), "--benchmark", "countdown-val", "--limit", "3", "--n", "4",
                 "--max-new-tokens", "8", "--prompt-template", "plain", "--reward-funcs", spec("contains_seven"), "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(r["reward"] == float("7" in r["completion"]) and r["correct"] == (r["reward"] >= 1) for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean_reward"] == pytest.approx(sum(r["reward"] for r in rows) / len(rows))
    assert metrics["avg_at_n"] == pytest.approx(metrics["mean_reward"])

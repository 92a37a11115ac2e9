"""The published exploration methods (docs/baselines.md) on hand-computed cases and brute-force
enumeration. That the trainer reaches each registered method with the right inputs is
tests/test_wiring.py; that a run with each computes what it did before, tests/test_reproducible.py."""

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch
from test_train import tiny_run

from sps.algorithms.advantages import (
    best_of_group_advantages,
    compute_advantages,
    focal_weights,
    grpo_advantages,
    max_rl_advantages,
    passk_advantages,
    pkpo_advantages,
    repeated_answer_penalty,
    scheduled_k,
    ucb_bonus,
    unlikeliness_rewards,
    w_reinforce_advantages,
)
from sps.algorithms.entropy_control import EntropyController
from sps.algorithms.flowrl import trajectory_balance_loss
from sps.algorithms.losses import token_entropy, token_logprobs, token_logprobs_topk
from sps.algorithms.policy_losses import (
    POLICY_LOSSES,
    archer_surrogate,
    clip_cov_surrogate,
    forward_kl_k3,
    kl_cov_surrogate,
    simko_surrogate,
    top_entropy_surrogate,
)
from sps.grading.base import Grade
from sps.grading.registry import register_grader
from sps.training.config import TrainConfig
from sps.training.trainer import train

# ---- advantages -------------------------------------------------------------------------------


def subsets_holding(i: int, n: int, k: int):
    return [s for s in itertools.combinations(range(n), k) if i in s]


def brute_passk(rewards: list[float], k: int) -> list[float]:
    """Mean over the k-subsets holding i of (best of the subset - mean best) / std of the best."""
    n = len(rewards)
    best = [max(rewards[j] for j in s) for s in itertools.combinations(range(n), k)]
    mean = sum(best) / len(best)
    std = math.sqrt(mean * (1 - mean))
    return [sum((max(rewards[j] for j in s) - mean) / std for s in subsets_holding(i, n, k)) / math.comb(n - 1, k - 1) for i in range(n)]


def brute_pkpo(rewards: list[float], k: int) -> list[float]:
    """s^(loo-1): (1/C(n, k)) sum over the k-subsets holding i of (best - best without i)."""
    n = len(rewards)
    return [
        sum(max(rewards[j] for j in s) - max(rewards[j] for j in s if j != i) for s in subsets_holding(i, n, k)) / math.comb(n, k)
        for i in range(n)
    ]


def test_passk_hand_case_and_zero_sum():
    rewards = torch.tensor([[1.0, 0, 1, 0, 0, 1, 0, 0]])  # N = 8, 3 correct
    advantages = passk_advantages(rewards, 4)
    assert advantages[0, 0].item() == pytest.approx(0.2774, abs=1e-4)
    assert advantages[0, 1].item() == pytest.approx(-0.1664, abs=1e-4)
    assert advantages.sum().item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("n", "c", "k"), [(8, 3, 4), (8, 1, 2), (6, 2, 3), (5, 3, 2), (7, 2, 5)])
def test_passk_equals_subset_enumeration(n, c, k):
    rewards = [1.0] * c + [0.0] * (n - c)  # mixed, with n - c >= k (else every advantage is 0: the edge-case test)
    expected = torch.tensor([brute_passk(rewards, k)])
    assert torch.allclose(passk_advantages(torch.tensor([rewards]), k), expected.float(), atol=1e-5)


def test_passk_with_k1_is_grpo_with_the_population_std():
    rewards = torch.tensor([[1.0, 0, 0, 1, 1], [0, 0, 1, 0, 0]])
    centred = rewards - rewards.mean(1, keepdim=True)
    assert torch.allclose(passk_advantages(rewards, 1), centred / (rewards.std(1, correction=0, keepdim=True) + 1e-6))


def test_passk_edge_cases():
    rewards = torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]])  # the last: n - c = 1 < k
    assert torch.equal(passk_advantages(rewards, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"k = 9, G = 8"):
        passk_advantages(torch.zeros(1, 8), 9)
    with pytest.raises(ValueError, match="0/1 rewards"):
        passk_advantages(torch.tensor([[0.5, 1.0]]), 1)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_pkpo_equals_subset_enumeration_on_any_rewards(k):
    rewards = torch.tensor([[0.3, 0.9, 0.1, 0.9, 0.5], [1.0, 0.0, 0.0, 1.0, 0.0]])
    expected = torch.tensor([brute_pkpo(row, k) for row in rewards.tolist()])
    assert torch.allclose(pkpo_advantages(rewards, k), expected, atol=1e-6)


def test_pkpo_binary_closed_form_k1_baseline_and_k_equal_g():
    rewards = torch.tensor([[1.0, 0, 1, 0, 0, 1, 0, 0]])
    advantages = pkpo_advantages(rewards, 4)
    assert torch.allclose(advantages, rewards * math.comb(5, 3) / math.comb(8, 4))  # wrong rollouts get exactly 0
    assert torch.allclose(pkpo_advantages(rewards, 1), rewards - (rewards.sum() - rewards) / 7)
    continuous = torch.tensor([[0.2, 0.9, 0.5, 0.7]])
    assert torch.allclose(pkpo_advantages(continuous, 4), best_of_group_advantages(continuous, scale=False))
    assert torch.allclose(pkpo_advantages(continuous, 4), torch.tensor([[0.0, 0.2, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"k = 5, G = 4"):
        pkpo_advantages(continuous, 5)


def test_best_of_group_hand_cases():
    rewards = torch.tensor([[0.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    # One correct: r_max - r_2nd = 1 over the unbiased std 0.5; two correct tie: 0; none: 0.
    expected = torch.tensor([[0.0, 1 / (0.5 + 1e-6), 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.allclose(best_of_group_advantages(rewards), expected)
    with pytest.raises(ValueError, match="G = 1"):
        best_of_group_advantages(torch.ones(2, 1))


def test_w_reinforce_rewards_correct_with_lambda_and_punishes_wrong_with_minus_one():
    rewards = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1]])
    expected = torch.tensor([[0.1, -1, 0.1], [-1, -1, -1], [0.1, 0.1, 0.1]])
    assert torch.allclose(w_reinforce_advantages(rewards, 0.1), expected)  # uniform groups still push


def test_max_rl_divides_the_centred_reward_by_the_group_mean():
    rewards = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0.5, 1.5, 1, 1]])
    # Mean 1/4: a correct rollout gets (1 - 1/4) / (1/4) = 3, a wrong one -1; a hard prompt weighs more.
    expected = torch.tensor([[3.0, -1, -1, -1], [1, 1, -1, -1], [0, 0, 0, 0], [-0.5, 0.5, 0, 0]])
    assert torch.allclose(max_rl_advantages(rewards), expected)


def test_focal_weights():
    success = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]).bool()
    assert torch.allclose(focal_weights(success, 0.5), torch.tensor([[math.sqrt(0.75)] * 4, [0.0] * 4, [1.0] * 4]))
    assert torch.equal(focal_weights(success, 0.0), torch.ones(3, 4))


def test_unlikeliness_hand_case_and_the_mixed_group_filter():
    rewards = torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 1]])
    logps = torch.tensor([[-1.0, -2, -3, -0.5], [-1.0, -2, -3, -0.5]])  # ranks 2, 1, 0, 3
    success = rewards == 1
    shaped = unlikeliness_rewards(rewards, success, logps, 0.25)
    assert torch.allclose(shaped, torch.tensor([[0.875, 0.9375, 0, 0.8125], [1, 1, 1, 1]]))
    unfiltered = unlikeliness_rewards(rewards, success, logps, 0.25, only_mixed_groups=False)
    assert torch.allclose(unfiltered[1], torch.tensor([0.875, 0.9375, 1.0, 0.8125]))
    assert torch.equal(unlikeliness_rewards(rewards, success, logps, 0.0), rewards)
    # Real-valued rewards: only successful rollouts are shaped; a partial credit below the threshold is kept.
    partial = torch.tensor([[1.0, 0.5, 0.0, 1.0]])
    shaped = unlikeliness_rewards(partial, partial >= 1, logps[:1], 0.25)
    assert torch.allclose(shaped, torch.tensor([[0.875, 0.5, 0.0, 0.8125]]))


def test_pkpo_anneals_k_at_its_switch_step():
    assert [scheduled_k(8, 1, 3, step) for step in (1, 2, 3, 4)] == [8, 8, 1, 1]
    assert scheduled_k(8, 1, 0, 10_000) == 8


# ---- losses ------------------------------------------------------------------------------------


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, requires_grad=True)


def simko_case(advantage: float, score: float):
    logp = leaf([[math.log(1.1), math.log(1.1)]])  # ratio 1.1 against old log-prob 0
    topk = leaf([[[-0.1, -1.0, -2.0], [-0.1, -1.0, -2.0]]])
    entropy = torch.tensor([[1.0, 2.0]])  # the 0.8 quantile is 1.8: only token 2 is high-entropy
    loss, _, _ = simko_surrogate(logp, torch.zeros(1, 2), topk, torch.tensor([[True, True]]), entropy, torch.tensor([advantage]),
                                 torch.tensor([score == 1]), torch.ones(1, 2), 0.2, 0.2, alpha=0.01, entropy_quantile=0.8)
    loss.sum().backward()
    return loss.detach(), logp.grad, topk.grad


def test_simko_moves_a_share_of_the_push_to_the_candidates_at_high_entropy_tokens():
    loss, grad, topk_grad = simko_case(advantage=1.0, score=1.0)
    assert torch.allclose(loss, torch.tensor([[-1.1, -1.1]]))  # the value is the plain ratio's
    assert torch.allclose(grad, torch.tensor([[-1.1, -1.1 * 0.99]]))
    assert torch.allclose(topk_grad[0, 0], torch.zeros(3))
    assert torch.allclose(topk_grad[0, 1], torch.full((3,), -1.1 * 0.01 / 3))


def test_simko_penalises_a_wrong_rollouts_top1_tokens_by_1_1_at_high_entropy():
    loss, grad, topk_grad = simko_case(advantage=-1.0, score=0.0)
    assert torch.allclose(loss, torch.tensor([[1.1, 1.1 * 1.1]]))
    assert torch.allclose(grad, torch.tensor([[1.1, 1.21]]))
    assert torch.equal(topk_grad, torch.zeros(1, 2, 3))  # no mixing on wrong rollouts


def cov_case():
    """Advantages (2, -2) and log-probs with one token of covariance 2 (in the band 1..5)."""
    return leaf([[-0.1, -2.1], [-1.1, -1.1]]), torch.tensor([2.0, -2.0]), torch.ones(2, 2)


def test_clip_cov_cuts_the_gradient_of_a_token_in_the_covariance_band():
    logp, advantages, mask = cov_case()
    loss, low, high = clip_cov_surrogate(logp, logp.detach(), advantages, mask, 0.2, 0.2, ratio=2e-4)
    loss.sum().backward()
    assert torch.allclose(loss.detach(), torch.tensor([[0.0, -2.0], [2.0, 2.0]]))
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -2.0], [2.0, 2.0]]))
    assert not (low | high).any()


def test_kl_cov_penalises_the_largest_covariance_token_and_never_clips():
    logp, advantages, mask = cov_case()
    old = logp.detach() - 0.5  # ratio e^0.5 = 1.65, far outside PPO's clip range
    loss = kl_cov_surrogate(logp, old, advantages, mask, ratio=2e-3, coef=1.0)
    loss.sum().backward()
    r = math.exp(0.5)
    assert torch.allclose(loss.detach(), torch.tensor([[-2 * r + 0.5, -2 * r], [2 * r, 2 * r]]))
    assert torch.allclose(logp.grad, torch.tensor([[-2 * r + 1, -2 * r], [2 * r, 2 * r]]))


def test_forward_kl_k3_value_gradient_and_dph_on_correct_rollouts_only():
    logp = leaf([[0.5, 0.0]])
    kl = forward_kl_k3(logp, torch.zeros(1, 2))
    kl.sum().backward()
    assert torch.allclose(kl.detach(), torch.tensor([[math.exp(0.5) - 1.5, 0.0]]))
    assert torch.allclose(logp.grad, torch.tensor([[math.exp(0.5) - 1, 0.0]]))  # d/dlogp = u - 1
    logp2 = torch.tensor([[0.5], [0.5]])
    loss, _ = POLICY_LOSSES["dph"].fn(TrainConfig(), logp=logp2, old_logp=logp2, advantages=torch.zeros(2),
                                      success=torch.tensor([True, False]), ref_logp=torch.zeros(2, 1))
    assert torch.allclose(loss, torch.tensor([[0.01 * (math.exp(0.5) - 1.5)], [0.0]]))


def test_topk_forward_agrees_with_the_full_distribution():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    tokens = logits.argmax(-1)
    tokens[0, 0] = (tokens[0, 0] + 1) % 7  # one token that is not the top-1
    logps, topk, is_top1, entropy = token_logprobs_topk(logits, tokens, 3, temperature=0.7)
    assert torch.allclose(logps, token_logprobs(logits, tokens, 0.7))
    assert torch.allclose(topk, (logits / 0.7).log_softmax(-1).topk(3).values)
    assert torch.allclose(entropy, token_entropy(logits, 0.7))
    assert is_top1.tolist() == [[False, True, True], [True, True, True]]


# ---- adaptive entropy ----------------------------------------------------------------------------


def test_adaptive_entropy_follows_skyworks_rule():
    control = EntropyController(0.0, target=0.2, delta=1e-4, coef_min=0.0, coef_max=5e-3)
    control.update(0.1)  # below the target: coefficient up, bonus on
    assert control.bonus() == pytest.approx(1e-4)
    control.update(0.3)  # above: down (to the floor), bonus off
    assert control.coef == 0.0 and control.bonus() == 0.0
    for _ in range(100):
        control.update(0.0)
    assert control.bonus() == pytest.approx(5e-3)  # capped at coef_max
    copy = EntropyController(0.0, 0.0, 0.0, 0.0, 0.0)
    copy.load_state_dict(control.state_dict())
    assert copy == control


def test_a_fixed_coefficient_never_moves():
    control = EntropyController.fixed(0.01)
    for measured in (0.0, 5.0, float("nan")):
        control.update(measured)
        assert control.bonus() == 0.01


# ---- adaptive entropy in a run --------------------------------------------------------------------


def test_the_adaptive_coefficient_rises_is_checkpointed_and_resumes(random_llama, tmp_path):
    # Entropy far below the target: the coefficient rises by delta each step.
    adaptive = replace(TrainConfig().adaptive_entropy, enabled=True, target=10.0, delta=0.01, coef_max=1.0)
    cfg = tiny_run(random_llama, tmp_path / "run", max_steps=2, eval_every=-1, probe_problems=0, save_every=2,
                   train_size=16, prompts_per_step=8, num_generations=4, adaptive_entropy=adaptive)
    run_dir = train(cfg, show_progress=False)
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["entropy_control/coef"] for r in log] == pytest.approx([0.0, 0.01])
    state = torch.load(run_dir / "checkpoints" / "step_000002" / "trainer_state.pt", weights_only=False)
    assert state["entropy_control"]["coef"] == pytest.approx(0.02)
    train(replace(cfg, max_steps=3, save_every=3), show_progress=False)  # resumed: continues, not from 0
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["entropy_control/coef"] == pytest.approx(0.02)


# ---- the newer peers (docs/baselines.md) -------------------------------------------------------------


def test_top_entropy_keeps_the_top_share_of_the_micro_batch_and_averages_over_it():
    # The authors' get_global_entropy_top_mask: 10 valid tokens in 3 completions (one of a single
    # token), ranked together; rho 0.2 keeps exactly ceil(2) = 2 of them, whichever completion holds them.
    entropy = torch.tensor([[0.1, 0.9, 0.3, 0.4], [0.5, 0.2, 0.6, 0.0], [0.8, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]])
    logp = leaf([[0.0] * 4] * 3)
    loss, _, _ = top_entropy_surrogate(logp, torch.zeros(3, 4), torch.tensor([1.0, 1.0, -2.0]), entropy, mask, 0.2, 0.2, rho=0.2)
    (loss * mask).sum().div(mask.sum()).backward()  # loss_type dapo: the token mean over the micro-batch
    # Kept: 0.9 (row 0) and 0.8 (row 2, its only token); the mean over the 2 kept tokens of -A * ratio.
    assert torch.allclose(loss[mask > 0].sum() / mask.sum(), torch.tensor((-1.0 + 2.0) / 2))
    assert torch.allclose(logp.grad, torch.tensor([[0, -0.5, 0, 0], [0, 0, 0, 0], [1.0, 0, 0, 0]]))
    # Ties: 5 equal entropies, rho 0.5 keeps exactly ceil(2.5) = 3, not all 5 (a quantile with ties kept would).
    logp = leaf([[0.0] * 5])
    ties, _, _ = top_entropy_surrogate(logp, torch.zeros(1, 5), torch.tensor([1.0]), torch.ones(1, 5), torch.ones(1, 5), 0.2, 0.2, rho=0.5)
    assert int((ties != 0).sum()) == 3 and torch.allclose(ties.sum() / 5, torch.tensor(-1.0))
    ties.sum().div(5).backward()
    assert torch.allclose(logp.grad.sum(), torch.tensor(-1.0)) and sorted(logp.grad.flatten().tolist()) == pytest.approx([-1 / 3] * 3 + [0, 0])


def test_top_entropy_caps_a_negative_advantage_with_the_dual_clip():
    # ratio e^3 = 20.1 on a wrong token: -A * ratio would be 40.2, the dual clip holds it at -c A = 20 (c 10); no gradient then.
    logp = leaf([[3.0]])
    loss, _, _ = top_entropy_surrogate(logp, torch.zeros(1, 1), torch.tensor([-2.0]), torch.ones(1, 1), torch.ones(1, 1), 0.2, 0.2, rho=1.0)
    assert torch.allclose(loss, torch.tensor([[20.0]]))
    loss.sum().backward()
    assert logp.grad.item() == 0.0
    off, _, _ = top_entropy_surrogate(torch.tensor([[3.0]]), torch.zeros(1, 1), torch.tensor([-2.0]), torch.ones(1, 1), torch.ones(1, 1), 0.2, 0.2,
                                      rho=1.0, dual_clip=0.0)
    assert torch.allclose(off, torch.tensor([[2 * math.exp(3.0)]]))


def test_a_method_s_preset_applies_where_the_run_keeps_the_default_and_says_so():
    from sps.training.validate import with_presets

    cfg, applied = with_presets(TrainConfig(loss_mode="archer"))
    assert (cfg.loss_type, cfg.drop_zero_variance_groups) == ("grpo", True)
    assert applied == ["loss_mode archer: loss_type 'grpo', its authors' setting (author_settings false keeps the default)",
                       "loss_mode archer: drop_zero_variance_groups True, its authors' setting (author_settings false keeps the default)"]
    assert with_presets(TrainConfig(loss_mode="flowrl"))[0].loss_type == "grpo"
    mine, applied = with_presets(TrainConfig(loss_mode="archer", loss_type="dr_grpo"))  # set by the user: kept
    assert (mine.loss_type, mine.drop_zero_variance_groups) == ("dr_grpo", True) and len(applied) == 1
    assert with_presets(TrainConfig(loss_mode="archer", author_settings=False)) == (TrainConfig(loss_mode="archer", author_settings=False), [])
    assert with_presets(TrainConfig()) == (TrainConfig(), [])  # vanilla has no preset


def test_archer_clips_high_entropy_tokens_looser_and_keeps_their_kl_out():
    entropy = torch.tensor([[0.1, 0.2, 0.3, 0.4, 1.0]])  # the 0.8 quantile is 0.52: only the last is high-entropy
    mask = torch.ones(1, 5)
    ratio = math.log(1.4)
    loss, _, high = archer_surrogate(torch.full((1, 5), ratio), torch.zeros(1, 5), torch.tensor([1.0]), entropy, mask,
                                     torch.full((1, 5), ratio), epsilon=0.2, high_epsilon=0.5, kl_coef=0.0)
    assert torch.allclose(loss, torch.tensor([[-1.2, -1.2, -1.2, -1.2, -1.4]]))
    assert high.tolist() == [[True, True, True, True, False]]
    loss, _, _ = archer_surrogate(torch.full((1, 5), math.log(0.6)), torch.zeros(1, 5), torch.tensor([-1.0]), entropy, mask,
                                  torch.full((1, 5), math.log(0.6)), epsilon=0.2, high_epsilon=0.5, kl_coef=0.0)
    assert torch.allclose(loss, torch.tensor([[0.8, 0.8, 0.8, 0.8, 0.6]]))
    # KL: logp -1 against ref -1.5 on every token, k3 = e^-0.5 + 0.5 - 1; only the 4 low-entropy tokens, scaled 5/4.
    kl = math.exp(-0.5) - 0.5
    loss, _, _ = archer_surrogate(torch.full((1, 5), -1.0), torch.full((1, 5), -1.0), torch.tensor([0.0]), entropy, mask,
                                  torch.full((1, 5), -1.5), epsilon=0.2, kl_coef=0.001)
    assert torch.allclose(loss, torch.tensor([[0.001 * kl * 5 / 4] * 4 + [0.0]]))


def test_outcome_bonus_on_the_papers_example():
    # Answers 5, 5, 7, 9 (5 correct); "5" was sampled 3 times before, 7 and 9 never.
    cfg = TrainConfig(advantage=replace(TrainConfig().advantage, outcome_bonus="ucb_con", outcome_bonus_baseline=0.5))
    rewards = torch.tensor([[1.0, 1, 0, 0]])
    state = {"outcome_bonus": {"counts": {"x": {"5": 3}}}}
    advantages, _ = compute_advantages(cfg, rewards, rewards == 1, torch.zeros(1, 4), 1, [["5", "5", "7", "9"]], ["x"], state)
    grpo = grpo_advantages(rewards)
    assert torch.allclose(advantages - grpo, 0.2 * torch.tensor([[3**-0.5 - 0.5] * 2 + [0.5, 0.5]]), atol=1e-6)
    assert state["outcome_bonus"]["counts"]["x"] == {"5": 5, "7": 1, "9": 1}  # this step's answers counted after
    assert torch.allclose(repeated_answer_penalty([["5", "5", "7", "9"]]), torch.tensor([[-0.25, -0.25, 0, 0]]))
    assert torch.allclose(ucb_bonus(torch.tensor([[0, 1, 4]])), torch.tensor([[1.0, 1.0, 0.5]]))
    mean = replace(cfg, advantage=replace(cfg.advantage, outcome_bonus="ucb_mean"))
    state = {"outcome_bonus": {"counts": {"x": {"5": 3}}}}
    advantages, _ = compute_advantages(mean, rewards, rewards == 1, torch.zeros(1, 4), 1, [["5", "5", "7", "9"]], ["x"], state)
    b = torch.tensor([3**-0.5, 3**-0.5, 1, 1])
    assert torch.allclose(advantages - grpo, 0.2 * (b - b.mean()), atol=1e-6)


def test_outcome_counts_keep_no_answer_apart_from_the_answer_none():
    # A literal answer "None" and a rollout without an answer are two outcomes (str() made them one).
    cfg = TrainConfig(advantage=replace(TrainConfig().advantage, outcome_bonus="ucb_con", outcome_bonus_baseline=0.0, outcome_bonus_coef=1.0))
    rewards = torch.tensor([[1.0, 0, 0, 0]])
    state = {"outcome_bonus": {"counts": {"x": {"None": 4}}}}
    advantages, _ = compute_advantages(cfg, rewards, rewards == 1, torch.zeros(1, 4), 1, [["None", None, None, "7"]], ["x"], state)
    assert torch.allclose(advantages - grpo_advantages(rewards), torch.tensor([[0.5, 1, 1, 1]]), atol=1e-6)  # 1/sqrt(4), then unseen
    assert state["outcome_bonus"]["counts"]["x"] == {"None": 5, None: 2, "7": 1}


class SevenOrNot:
    """Correct with a '7' in the completion; its answer is whether there is one: two outcomes that recur."""

    name = "seven_or_not"

    def grade(self, completions, problems):
        return [Grade("7" in c, "ok", str("7" in c)) for c in completions]

    def close(self):
        pass


register_grader(SevenOrNot.name, SevenOrNot)


def test_outcome_counts_are_checkpointed_so_a_resumed_run_repeats_the_uninterrupted_one(random_llama, tmp_path):
    bonus = replace(TrainConfig().advantage, outcome_bonus="ucb_con")
    cfg = tiny_run(random_llama, tmp_path / "whole", reward_funcs=[SevenOrNot.name], advantage=bonus, max_steps=4, save_every=2,
                   eval_every=-1, probe_problems=0, train_size=8, prompts_per_step=8, num_generations=4, max_completion_length=4)
    whole = [json.loads(line) for line in (train(cfg, show_progress=False) / "metrics.jsonl").read_text().splitlines()]
    halves = replace(cfg, output_dir=str(tmp_path / "halves"))
    train(replace(halves, max_steps=2), show_progress=False)
    resumed = [json.loads(line) for line in (train(halves, show_progress=False) / "metrics.jsonl").read_text().splitlines()]
    assert [r["outcome_bonus/mean"] for r in resumed] == pytest.approx([r["outcome_bonus/mean"] for r in whole], rel=1e-6)
    assert whole[0]["outcome_bonus/mean"] > whole[-1]["outcome_bonus/mean"]  # answers seen again earn less


def test_flowrl_trajectory_balance_by_hand():
    # Row 0: 2 tokens (a NaN in its padding), ratio e^0.2 = 1.22, under the cap; row 1: 3 tokens, on-policy.
    logp = leaf([[-1.0, -2.0, float("nan")], [-0.5, -0.5, -0.5]])
    old = torch.tensor([[-1.1, -2.1, 0.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.5, float("nan")], [-1.0, -1.0, -1.0]])
    log_z = leaf([0.5, -1.0])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1]])
    loss, residual, weight = trajectory_balance_loss(logp, old, ref, log_z, torch.tensor([1.0, -0.5]), mask, 15.0, 10.0)
    # residual = log Z + mean log pi - 15 A - mean log pi_ref
    w = math.exp(0.2)
    assert torch.allclose(residual, torch.tensor([0.5 - 1.5 - 15 + 1.5, -1.0 - 0.5 + 7.5 + 1.0]))
    assert torch.allclose(weight, torch.tensor([w, 1.0]))
    assert torch.allclose(loss, torch.tensor([w * 14.5**2, 7.0**2]))
    loss.sum().backward()
    assert torch.allclose(log_z.grad, torch.tensor([2 * w * -14.5, 2 * 7.0]))
    assert torch.allclose(logp.grad, torch.tensor([[-14.5 * w, -14.5 * w, 0.0], [14 / 3, 14 / 3, 14 / 3]]))  # 2 w r / length


def test_flowrl_caps_the_importance_weight_at_10_with_no_lower_bound():
    # The recipe's torch.clamp(imp_w_raw, max=10): a ratio of e^3 = 20.1 weighs 10, one of e^-3 = 0.05 keeps its 0.05.
    logp = torch.tensor([[3.0], [-3.0]])
    _, _, weight = trajectory_balance_loss(logp, torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2), torch.ones(2, 1), 15.0)
    assert torch.allclose(weight, torch.tensor([10.0, math.exp(-3.0)]))


def test_flowrl_log_z_reads_each_prompts_mean_final_hidden_state(random_llama):
    from sps.models.loading import load_policy
    from sps.rollout.base import Completion
    from sps.training.batch import collate, completion_forward

    model = load_policy(str(random_llama), "float32", "cpu")[0].eval()
    prompts = [[3, 4, 5, 6], [7, 8]]
    completion = Completion([9, 10], "c", [0.0, 0.0], "stop")
    expected = torch.stack([model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0].mean(0) for p in prompts])
    with torch.no_grad():
        for groups in ([[completion]] * 2, [[completion, completion]] * 2):  # every row whole; rows sharing their prompt's pass
            batch = collate(prompts, groups, pad_id=0)
            state = completion_forward(model, batch, with_prompt_state=True)[1]
            assert torch.allclose(state, expected.repeat_interleave(len(groups[0]), 0), atol=1e-5)


def test_flowrl_trains_keeps_its_head_out_of_the_model_files_and_resumes_exactly(random_llama, tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_run(random_llama, tmp_path / "whole", loss_mode="flowrl", loss_type="grpo", max_steps=4, save_every=2, eval_every=-1,
                   probe_problems=0, max_completion_length=8)
    whole = [json.loads(line) for line in (train(cfg, show_progress=False) / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["flowrl/log_z"]) and r["nonfinite_updates"] == 0 for r in whole)
    assert len({r["flowrl/log_z"] for r in whole}) == 4  # the head trains
    last = tmp_path / "whole" / "checkpoints" / "step_000004"
    assert set(torch.load(last / "log_z_head.pt", weights_only=True)) >= {"net.0.weight", "net.8.bias"}
    assert not [name for name in load_file(last / "model.safetensors") if "log_z" in name]
    halves = replace(cfg, output_dir=str(tmp_path / "halves"))
    train(replace(halves, max_steps=2), show_progress=False)
    resumed = [json.loads(line) for line in (train(halves, show_progress=False) / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-6)
    assert [r["flowrl/log_z"] for r in resumed] == pytest.approx([r["flowrl/log_z"] for r in whole], rel=1e-6)

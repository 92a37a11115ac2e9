"""The RL loss pieces on hand-computed cases."""

import math

import pytest
import torch

from sps.algorithms.advantages import grpo_advantages, rloo_advantages, zero_std_fraction
from sps.algorithms.losses import clipped_surrogate, kl_k3, loss_weights, token_entropy, token_logprobs


def test_group_advantages_hand_case():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    std = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5]]) / (std + 1e-4)
    assert torch.allclose(grpo_advantages(rewards, "group"), expected)
    assert torch.allclose(grpo_advantages(rewards, "none"), torch.tensor([[0.5, -0.5, -0.5, 0.5]]))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_give_zero_advantage(scale):
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    advantages = grpo_advantages(rewards, scale)
    assert torch.equal(advantages[:2], torch.zeros(2, 3))
    assert advantages[2].abs().sum() > 0


def test_batch_scaling_uses_one_std_for_all_groups():
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    std = rewards.std()
    assert torch.allclose(grpo_advantages(rewards, "batch"), torch.tensor([[0.5, -0.5], [0.0, 0.0]]) / (std + 1e-4))


def test_rloo_is_reward_minus_mean_of_the_others():
    rewards = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.allclose(rloo_advantages(rewards), torch.tensor([[1.0, -0.5, -0.5]]))


def test_zero_std_fraction():
    assert zero_std_fraction(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])) == 0.5


def test_unknown_scaling_is_named():
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_advantages(torch.zeros(1, 2), "median")


def surrogate_grad(ratio: float, advantage: float, eps_low=0.2, eps_high=0.2):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, low, high = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([advantage]), eps_low, eps_high)
    loss.sum().backward()
    return loss.item(), logp.grad.item(), bool(low), bool(high)


def test_clipped_ratio_gives_no_gradient():
    # Ratio above 1 + eps with A > 0, and below 1 - eps with A < 0: clipped, zero gradient.
    loss, grad, low, high = surrogate_grad(1.5, 1.0)
    assert grad == 0.0 and high and not low and loss == pytest.approx(-1.2)
    loss, grad, low, high = surrogate_grad(0.5, -1.0)
    assert grad == 0.0 and low and not high and loss == pytest.approx(0.8)


def test_unclipped_ratio_gets_the_policy_gradient():
    # d(-rho A)/d logp = -rho A inside the clip range; and on the side that the clip does not bind.
    _, grad, low, high = surrogate_grad(1.1, 2.0)
    assert grad == pytest.approx(-2.2) and not (low or high)
    _, grad, _, _ = surrogate_grad(0.5, 1.0)  # A > 0 with a small ratio: not clipped
    assert grad == pytest.approx(-0.5)


def test_clip_higher_widens_only_the_upper_side():
    _, grad, _, high = surrogate_grad(1.25, 1.0, eps_high=0.28)
    assert grad == pytest.approx(-1.25) and not high


def test_dapo_weights_are_a_token_mean():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    w = loss_weights(mask, "dapo", num_sequences=2, num_tokens=4, max_completion_length=3)
    assert torch.allclose(w, mask / 4)


def test_grpo_weights_average_each_sequence_then_sequences():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    w = loss_weights(mask, "grpo", num_sequences=2, num_tokens=4, max_completion_length=3)
    assert torch.allclose(w.sum(-1), torch.tensor([0.5, 0.5]))
    assert torch.allclose(w[0], torch.full((3,), 1 / 6))


def test_dr_grpo_normaliser_is_constant():
    short = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    long = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    w_short = loss_weights(short, "dr_grpo", 1, 1, 4)
    w_long = loss_weights(long, "dr_grpo", 1, 4, 4)
    # The weight of a token does not depend on its sequence's length (or the token count).
    assert w_short[0, 0] == w_long[0, 0] == pytest.approx(1 / 4)


def test_kl_k3_matches_closed_form():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -1.5]])
    d = ref - logp
    assert torch.allclose(kl_k3(logp, ref), torch.exp(d) - d - 1)
    assert kl_k3(logp, logp).abs().max() == 0
    assert (kl_k3(logp, ref) >= 0).all()


def test_logprobs_and_entropy_of_known_distributions():
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens
    assert torch.allclose(token_entropy(logits), torch.full((1, 2), math.log(4)))
    assert torch.allclose(token_logprobs(logits, torch.tensor([[0, 3]])), torch.full((1, 2), -math.log(4)))
    # Temperature divides the logits before the softmax.
    logits = torch.tensor([[[2.0, 0.0]]])
    expected = torch.log_softmax(torch.tensor([1.0, 0.0]), -1)[0]
    assert torch.allclose(token_logprobs(logits, torch.tensor([[0]]), temperature=2.0), expected.view(1, 1))

"""Advantages for GRPO-family RL. Pure tensor functions.

Shapes: P prompts, G generations per prompt. Rewards arrive as (P, G); advantages leave as (P, G),
one scalar per completion, broadcast over its tokens by the loss.

Every estimator is registered in ADVANTAGE_ESTIMATORS under the name users select it by (verl's
`adv_estimator` vocabulary where one exists), as a function of (rewards, AdvantageParams); each
reads only the parameters it needs. docs/baselines.md gives each method's source and defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

SCALINGS = ("group", "batch", "none")


def grpo_advantages(rewards: torch.Tensor, scale_rewards: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i - mean_group(r)) / (std + eps).

    rewards: (P, G). scale_rewards: "group" divides by each group's std (GRPO), "batch" by the
    std of all rewards in the batch, "none" not at all (Dr. GRPO). A group whose rewards are all
    equal gets zero advantage whatever the scaling. Returns (P, G).
    """
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        return centered / (rewards.std(dim=1, keepdim=True) + eps)
    if scale_rewards == "batch":
        return centered / (rewards.std() + eps)
    if scale_rewards == "none":
        return centered
    raise ValueError(f"scale_rewards must be one of {', '.join(SCALINGS)} (got {scale_rewards!r})")


def rloo_advantages(rewards: torch.Tensor, scale_rewards: str = "none", eps: float = 1e-4) -> torch.Tensor:
    """Leave-one-out baseline: A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean(r)).

    rewards: (P, G) with G >= 2. Scaling as in grpo_advantages. Returns (P, G).
    """
    group_size = rewards.shape[1]
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 generations per prompt")
    return grpo_advantages(rewards, scale_rewards, eps) * group_size / (group_size - 1)


def passk_advantages(rewards: torch.Tensor, k: int, eps: float = 1e-6) -> torch.Tensor:
    """Pass@k Training's analytical advantage (Chen et al. 2025), for 0/1 rewards.

    With c correct out of n = G: R = 1 - C(n-c, k)/C(n, k) is the group's expected Pass@k,
    sigma = sqrt(R (1 - R)); a correct rollout gets (1 - R)/(sigma + eps), a wrong one
    (1 - R - C(n-c-1, k-1)/C(n-1, k-1))/(sigma + eps). Equals the mean over the k-subsets holding
    rollout i of (max reward of the subset - R)/sigma; a group's advantages sum to 0; k = 1 is
    GRPO with the population std. All-correct and all-wrong groups get 0.
    rewards: (P, G) of 0/1; 1 <= k <= G. Returns (P, G).
    """
    n = _check_k(rewards, k, "passk")
    _require_binary(rewards, "passk")
    correct = rewards.sum(1).long()  # (P,)
    misses = _binomials(n, k)[n - correct] / math.comb(n, k)  # no correct answer among k drawn
    expected = 1 - misses
    std = (expected * (1 - expected)).sqrt()
    positive = (1 - expected) / (std + eps)
    # A wrong rollout's subsets miss with this probability given it is drawn (its index is
    # unused when the group has no wrong rollout).
    wrong_misses = _binomials(n - 1, k - 1)[(n - correct - 1).clamp(min=0)] / math.comb(n - 1, k - 1)
    negative = (1 - expected - wrong_misses) / (std + eps)
    advantages = torch.where(rewards.double() == 1, positive.unsqueeze(1), negative.unsqueeze(1))
    return advantages.to(rewards.dtype)


def pkpo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """PKPO's s^(loo-1) reward transform (Walder & Karkhanis 2025, Eq. 33), used as the advantage.

    s_i = (1/C(n, k)) * sum over the k-subsets I holding i of (max_I r - max_{I minus i} r): what
    rollout i adds to the best of k. With 0/1 rewards a correct rollout gets C(n-c, k-1)/C(n, k)
    and a wrong one exactly 0. k = n is Tang et al.'s estimator (the best gets r_max - r_2nd).
    k = 1 is PKPO's plain leave-one-out baseline r_i - mean_{j != i} r_j (Eq. 26), as the paper
    uses it. rewards: (P, G) of any values; 1 <= k <= G. Returns (P, G).
    """
    n = _check_k(rewards, k, "pkpo")
    if k == 1:
        return rloo_advantages(rewards, "none")
    # With the rewards sorted ascending, position j is the best of C(j, k-1) subsets; each such
    # subset's second best is at position m < j in C(m, k-2) of them.
    weights = torch.zeros(n, n, dtype=torch.float64)
    for j in range(n):
        weights[j, j] = math.comb(j, k - 1)
        for m in range(j):
            weights[j, m] = -math.comb(m, k - 2)
    ordered, order = rewards.double().sort(dim=1, stable=True)
    transformed = ordered @ weights.T / math.comb(n, k)
    return torch.empty_like(transformed).scatter_(1, order, transformed).to(rewards.dtype)


def best_of_group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """verl's `grpo_passk` (Tang et al. 2025): only the group's best rollout gets a non-zero
    advantage, r_max - r_second, divided by (the group's unbiased std + eps) when `scale`.

    It optimises Pass@G: with 0/1 rewards only groups with exactly one correct rollout learn.
    rewards: (P, G) with G >= 2. Returns (P, G).
    """
    if rewards.shape[1] < 2:
        raise ValueError(f"grpo_passk needs at least 2 generations per prompt (got G = {rewards.shape[1]})")
    top = rewards.topk(2, dim=1)
    gap = (top.values[:, :1] - top.values[:, 1:]).to(rewards.dtype)
    advantages = torch.zeros_like(rewards).scatter_(1, top.indices[:, :1], gap)
    return advantages / (rewards.std(dim=1, keepdim=True) + eps) if scale else advantages


def w_reinforce_advantages(rewards: torch.Tensor, positive_weight: float = 0.1) -> torch.Tensor:
    """W-REINFORCE (Zhu et al. 2025): a correct rollout gets positive_weight (lambda), a wrong one
    -1; no group baseline, so all-correct and all-wrong groups still push. rewards: (P, G) of 0/1.
    positive_weight 0 is NSR (negative samples only). Returns (P, G).
    """
    _require_binary(rewards, "w_reinforce")
    return torch.where(rewards == 1, positive_weight, -1.0).to(rewards.dtype)


def focal_weights(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """F-GRPO's focal weight (Plyusov et al. 2026): (1 - mean group reward)^gamma, one scalar per
    prompt, to multiply any estimator's advantages with, so easy prompts push less. rewards:
    (P, G) in [0, 1]. gamma 0 gives 1 everywhere; an all-correct group gets 0. Returns (P, G).
    """
    success = rewards.mean(dim=1, keepdim=True).clamp(0, 1)
    return (1 - success).pow(gamma).expand_as(rewards)


def unlikeliness_rewards(
    rewards: torch.Tensor, mean_logps: torch.Tensor, penalty: float, only_mixed_groups: bool = True
) -> torch.Tensor:
    """The unlikeliness reward (He et al. 2025): r_i * (1 - penalty * rank_i / G), rank 0 for the
    rollout with the lowest mean token log-prob in its group, so the likeliest correct rollout
    earns least. Reward shaping: the result goes to an advantage estimator (GRPO in the paper).

    only_mixed_groups: the authors drop groups with no or only correct rollouts before shaping;
    here such a group keeps its rewards unshaped, so GRPO gives it zero advantage as dropping
    would (without it an all-correct group learns from its ranks alone). Ties keep rollout order.
    rewards, mean_logps: (P, G). penalty 0 returns the rewards unchanged. Returns (P, G).
    """
    ranks = mean_logps.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    shaped = rewards * (1 - penalty * ranks / rewards.shape[1])
    if not only_mixed_groups:
        return shaped
    mixed = rewards.max(dim=1, keepdim=True).values != rewards.min(dim=1, keepdim=True).values
    return torch.where(mixed, shaped, rewards)


def scheduled_k(k: int, final_k: int, switch_step: int, step: int) -> int:
    """PKPO's annealing: k before switch_step, final_k from it on (switch_step 0: never switch)."""
    return final_k if 0 < switch_step <= step else k


@dataclass(frozen=True)
class AdvantageParams:
    """What the registered estimators read (each only its own)."""

    scale_rewards: str = "group"  # grpo, rloo; grpo_passk: group = divide by the std, none = not
    k: int = 4  # passk, pkpo
    positive_weight: float = 0.1  # w_reinforce's lambda


def _std_scaling(scale_rewards: str) -> bool:
    if scale_rewards not in ("group", "none"):
        raise ValueError(f"grpo_passk divides by the group std or not: scale_rewards must be group or none (got {scale_rewards!r})")
    return scale_rewards == "group"


ADVANTAGE_ESTIMATORS: dict[str, Callable[[torch.Tensor, AdvantageParams], torch.Tensor]] = {
    "grpo": lambda rewards, p: grpo_advantages(rewards, p.scale_rewards),
    "rloo": lambda rewards, p: rloo_advantages(rewards, p.scale_rewards),
    "passk": lambda rewards, p: passk_advantages(rewards, p.k),
    "pkpo": lambda rewards, p: pkpo_advantages(rewards, p.k),
    "grpo_passk": lambda rewards, p: best_of_group_advantages(rewards, _std_scaling(p.scale_rewards)),
    "w_reinforce": lambda rewards, p: w_reinforce_advantages(rewards, p.positive_weight),
}


def zero_std_fraction(rewards: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (they carry no RL signal). rewards: (P, G)."""
    return float((rewards.max(dim=1).values == rewards.min(dim=1).values).float().mean())


def _check_k(rewards: torch.Tensor, k: int, name: str) -> int:
    group_size = rewards.shape[1]
    if not 1 <= k <= group_size:
        raise ValueError(f"{name}: k must be between 1 and the group size G (got k = {k}, G = {group_size})")
    return group_size


def _require_binary(rewards: torch.Tensor, name: str) -> None:
    if not ((rewards == 0) | (rewards == 1)).all():
        raise ValueError(f"{name} needs 0/1 rewards (got values such as {rewards[(rewards != 0) & (rewards != 1)][0].item()})")


def _binomials(n: int, k: int) -> torch.Tensor:
    """C(a, k) for a = 0..n as float64, (n + 1,)."""
    return torch.tensor([math.comb(a, k) if k >= 0 else 0 for a in range(n + 1)], dtype=torch.float64)

"""The published policy losses beside PPO's clipped surrogate, as pure per-token functions.

Shapes as in sps.algorithms.losses: b completions, t tokens, K candidates. Each returns
(loss (b, t), low_clipped (b, t), high_clipped (b, t)) like `clipped_surrogate`; the trainer
aggregates the per-token losses with `loss_weights`. POLICY_LOSSES registers them under the
`loss_mode` names users select (verl's names); docs/baselines.md gives sources, defaults and quirks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sps.algorithms.losses import clipped_ratio_loss, clipped_surrogate

# SimKO's extra penalty on a wrong rollout's top-1 tokens at high entropy: a literal in the authors' code.
SIMKO_NEGATIVE_SCALE = 1.1


def simko_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    topk_logp: torch.Tensor,
    is_top1: torch.Tensor,
    entropy: torch.Tensor,
    advantages: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    alpha: float = 0.01,
    entropy_quantile: float = 0.8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimKO (Peng et al. 2025): PPO's clipped loss with two changes at each completion's
    high-entropy tokens (entropy above its `entropy_quantile` quantile over the completion):

    - correct completions (score 1): the ratio becomes (1 - alpha) rho + (alpha/K) sum_i sg(rho) rho_i/sg(rho_i),
      rho_i the ratio of the i-th top candidate: its value is rho, but a fraction alpha of the push
      goes to the K most likely tokens (their old log-probs cancel, so none are needed);
    - completions with a negative advantage: A is scaled by 1.1 where the sampled token is the top-1.

    logp, old_logp, entropy, mask: (b, t); topk_logp: (b, t, K) with gradients; is_top1: (b, t)
    bool; advantages, scores: (b,). The entropy is used detached.
    """
    valid = mask > 0
    entropy = entropy.detach()
    threshold = torch.nanquantile(entropy.masked_fill(~valid, float("nan")), entropy_quantile, dim=1, keepdim=True)
    high_entropy = entropy > threshold  # a completion without tokens has a NaN threshold: none
    ratio = torch.exp(logp - old_logp)
    candidates = ratio.detach().unsqueeze(-1) * torch.exp(topk_logp - topk_logp.detach())  # value rho each
    mix = alpha * (high_entropy & valid).to(ratio.dtype)
    mixed = (1 - mix) * ratio + mix / topk_logp.shape[-1] * candidates.sum(-1)
    ratio = torch.where((scores == 1).unsqueeze(-1) & valid, mixed, ratio)
    top1_penalty = (advantages < 0).unsqueeze(-1) & is_top1 & high_entropy
    per_token_advantages = advantages.unsqueeze(-1) * torch.where(top1_penalty, SIMKO_NEGATIVE_SCALE, 1.0)
    return clipped_ratio_loss(ratio, per_token_advantages, epsilon_low, epsilon_high)


def token_covariance(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cov_t = (A_t - mean A)(log pi_t - mean log pi) with means over the valid tokens of the
    micro-batch and log pi detached (Cui et al. 2025). logp, mask (b, t); advantages (b,) -> (b, t)."""
    valid = mask > 0
    per_token = advantages.unsqueeze(-1).expand_as(logp)
    logp = logp.detach()
    return (per_token - per_token[valid].mean()) * (logp - logp[valid].mean())


def clip_cov_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    ratio: float = 2e-4,
    cov_low: float = 1.0,
    cov_high: float = 5.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip-Cov (Cui et al. 2025): PPO's clipped loss, except that max(1, int(ratio * valid tokens))
    tokens drawn at random among the valid, unclipped ones with cov_low < Cov < cov_high lose
    their loss (and gradient). Selection is per call, i.e. per micro-batch, as in the authors' code.
    logp, old_logp, mask: (b, t); advantages: (b,).
    """
    loss, low, high = clipped_surrogate(logp, old_logp, advantages, epsilon_low, epsilon_high)
    valid = mask > 0
    cov = token_covariance(logp, advantages, mask)
    candidates = (valid & ~(low | high) & (cov > cov_low) & (cov < cov_high)).nonzero()
    count = max(int(ratio * int(valid.sum())), 1)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    keep = torch.ones_like(loss)
    keep[chosen[:, 0], chosen[:, 1]] = 0
    return loss * keep, low, high


def kl_cov_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, ratio: float = 2e-3, coef: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KL-Cov (Cui et al. 2025): the unclipped policy-gradient loss -A rho on every token, plus
    coef * |log pi - log pi_old| on the max(1, int(ratio * valid tokens)) valid tokens of largest
    Cov. No ratio clipping anywhere (the clipped masks are all False). On a fully on-policy
    minibatch the penalty and its gradient are 0. logp, old_logp, mask: (b, t); advantages: (b,).
    """
    loss = -advantages.unsqueeze(-1) * torch.exp(logp - old_logp)
    valid = mask > 0
    none = torch.zeros_like(valid)
    if not valid.any():
        return loss, none, none
    cov = token_covariance(logp, advantages, mask).masked_fill(~valid, -torch.inf)
    count = max(1, int(int(valid.sum()) * ratio))
    chosen = torch.zeros_like(valid).flatten()
    chosen[cov.flatten().topk(count).indices] = True
    penalty = coef * (logp - old_logp).abs()
    return torch.where(chosen.view_as(valid), loss + penalty, loss), none, none


def forward_kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """DPH-RL's forward-KL term per token: u - log u - 1 with u = pi / pi_ref at the token (the k3
    estimate of KL(pi_ref || pi) on samples of pi_ref), log u clamped to [-20, 20] and the value to
    [-10, 10] as in the authors' code. logp, ref_logp: (b, t) -> (b, t), >= 0."""
    log_u = (logp - ref_logp).clamp(-20, 20)
    return (torch.exp(log_u) - log_u - 1).clamp(-10, 10)


@dataclass
class SurrogateInputs:
    """One micro-batch of what a policy loss may read. b rows, t tokens, K candidates."""

    logp: torch.Tensor  # (b, t) with gradients
    old_logp: torch.Tensor  # (b, t) the rollout policy's
    advantages: torch.Tensor  # (b,)
    scores: torch.Tensor  # (b,) rewards: 1 = correct
    mask: torch.Tensor  # (b, t) the tokens in the loss
    epsilon_low: float
    epsilon_high: float
    entropy: torch.Tensor | None = None  # (b, t) when the loss needs_topk (or an entropy bonus is on)
    topk_logp: torch.Tensor | None = None  # (b, t, K) when the loss needs_topk
    is_top1: torch.Tensor | None = None  # (b, t) when the loss needs_topk
    ref_logp: torch.Tensor | None = None  # (b, t) under the start model when the loss needs_reference
    generator: torch.Generator | None = None  # for losses that draw tokens at random


@dataclass(frozen=True)
class PolicyLoss:
    """A registered loss: loss(inputs, params) -> (loss, low_clipped, high_clipped), params being the
    run's `policy_loss` settings, and what its forward pass must provide."""

    loss: Callable[[SurrogateInputs, Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    needs_topk: bool = False  # the top-K candidates, is_top1 and the (detached) entropy
    needs_reference: bool = False
    every_row: bool = False  # non-zero on rows with zero advantage, so those rows need their forward pass


def _dph(x: SurrogateInputs, p) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, low, high = clipped_surrogate(x.logp, x.old_logp, x.advantages, x.epsilon_low, x.epsilon_high)
    correct = (x.scores == 1).unsqueeze(-1).to(loss.dtype)
    return loss + p.dph_coef * correct * forward_kl_k3(x.logp, x.ref_logp), low, high


POLICY_LOSSES: dict[str, PolicyLoss] = {
    "vanilla": PolicyLoss(lambda x, p: clipped_surrogate(x.logp, x.old_logp, x.advantages, x.epsilon_low, x.epsilon_high)),
    "simko": PolicyLoss(
        lambda x, p: simko_surrogate(
            x.logp, x.old_logp, x.topk_logp, x.is_top1, x.entropy, x.advantages, x.scores, x.mask,
            x.epsilon_low, x.epsilon_high, p.simko_alpha, p.simko_entropy_quantile,
        ),
        needs_topk=True,
    ),
    "clip_cov": PolicyLoss(
        lambda x, p: clip_cov_surrogate(
            x.logp, x.old_logp, x.advantages, x.mask, x.epsilon_low, x.epsilon_high,
            p.clip_cov_ratio, p.clip_cov_lb, p.clip_cov_ub, x.generator,
        ),
        every_row=True,
    ),
    "kl_cov": PolicyLoss(
        lambda x, p: kl_cov_surrogate(x.logp, x.old_logp, x.advantages, x.mask, p.kl_cov_ratio, p.ppo_kl_coef),
        every_row=True,
    ),
    "dph": PolicyLoss(_dph, needs_reference=True, every_row=True),
}

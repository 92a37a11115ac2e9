"""The policy losses (PPO's clipped surrogate and the published ones beside it) and the extra loss
terms (KL to a reference, the entropy bonus), as pure per-token functions registered by name.

Shapes as in sps.algorithms.losses: b completions, t tokens, K candidates. A registered policy loss
is `fn(cfg, **inputs) -> (loss (b, t), metrics {name: (b, t) statistic})` and a loss term
`fn(cfg, **inputs) -> (value (b, t), metrics)`, added to the loss times its coefficient. The inputs
of one micro-batch, by keyword:
  logp (b, t) with gradients; old_logp (b, t) the rollout policy's; advantages (b,);
  success (b,) bool; mask (b, t) the tokens in the loss; generator, for losses that draw tokens;
  and what the function declares it `needs`: "entropy" (b, t) with gradients, "topk" (topk_logp
  (b, t, K) with gradients, is_top1 (b, t) bool, entropy (b, t) detached), "reference" (ref_logp (b, t)),
  "log_z" (log_z (b,) with gradients: FlowRL's learned log Z(x) of each row's prompt).
The trainer's forward pass provides exactly the needs of the run's loss and active terms, and
averages each metric over the valid tokens; `metrics` at registration names them, so a step logs
them (as 0) even when no row needed a forward pass. cfg is the run's TrainConfig (a loss's own
knobs live in its `policy_loss` section). `loss_mode` selects the loss by its name (verl's names);
docs/baselines.md gives sources, defaults and quirks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from sps.algorithms.flowrl import trajectory_balance_loss
from sps.algorithms.losses import clipped_ratio_loss, clipped_surrogate, kl_k3

if TYPE_CHECKING:
    from sps.training.config import TrainConfig

# SimKO's extra penalty on a wrong rollout's top-1 tokens at high entropy: a literal in the authors' code.
SIMKO_NEGATIVE_SCALE = 1.1


def simko_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    topk_logp: torch.Tensor,
    is_top1: torch.Tensor,
    entropy: torch.Tensor,
    advantages: torch.Tensor,
    success: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    alpha: float = 0.01,
    entropy_quantile: float = 0.8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimKO (Peng et al. 2025): PPO's clipped loss with two changes at each completion's
    high-entropy tokens (entropy above its `entropy_quantile` quantile over the completion):

    - correct completions (success): the ratio becomes (1 - alpha) rho + (alpha/K) sum_i sg(rho) rho_i/sg(rho_i),
      rho_i the ratio of the i-th top candidate: its value is rho, but a fraction alpha of the push
      goes to the K most likely tokens (their old log-probs cancel, so none are needed);
    - completions with a negative advantage: A is scaled by 1.1 where the sampled token is the top-1.

    logp, old_logp, entropy, mask: (b, t); topk_logp: (b, t, K) with gradients; is_top1: (b, t)
    bool; advantages: (b,); success: (b,) bool. The entropy is used detached.
    """
    valid = mask > 0
    entropy = entropy.detach()
    threshold = torch.nanquantile(entropy.masked_fill(~valid, float("nan")), entropy_quantile, dim=1, keepdim=True)
    high_entropy = entropy > threshold  # a completion without tokens has a NaN threshold: none
    ratio = torch.exp(logp - old_logp)
    candidates = ratio.detach().unsqueeze(-1) * torch.exp(topk_logp - topk_logp.detach())  # value rho each
    mix = alpha * (high_entropy & valid).to(ratio.dtype)
    mixed = (1 - mix) * ratio + mix / topk_logp.shape[-1] * candidates.sum(-1)
    ratio = torch.where(success.unsqueeze(-1) & valid, mixed, ratio)
    top1_penalty = (advantages < 0).unsqueeze(-1) & is_top1 & high_entropy
    per_token_advantages = advantages.unsqueeze(-1) * torch.where(top1_penalty, SIMKO_NEGATIVE_SCALE, 1.0)
    return clipped_ratio_loss(ratio, per_token_advantages, epsilon_low, epsilon_high)


def above_quantile(entropy: torch.Tensor, mask: torch.Tensor, quantile: float, inclusive: bool) -> torch.Tensor:
    """Tokens whose (detached) entropy is above the `quantile` of their completion's valid tokens'
    entropies (linear interpolation), at it too when inclusive. entropy, mask: (b, t) -> (b, t) bool;
    a completion without tokens has none."""
    valid = mask > 0
    entropy = entropy.detach()
    threshold = torch.nanquantile(entropy.masked_fill(~valid, float("nan")), quantile, dim=1, keepdim=True)
    return ((entropy >= threshold) if inclusive else (entropy > threshold)) & valid


def top_share(entropy: torch.Tensor, mask: torch.Tensor, rho: float) -> torch.Tensor:
    """Exactly ceil(rho x the valid tokens) of the micro-batch's valid tokens, those of highest
    (detached) entropy ranked together across its completions, ties by position (topk's order).
    entropy, mask: (b, t) -> (b, t) bool."""
    valid = (mask > 0).flatten()
    count = math.ceil(rho * int(valid.sum()))
    scores = entropy.detach().flatten().masked_fill(~valid, float("-inf"))
    keep = torch.zeros_like(valid)
    keep[torch.topk(scores, count, sorted=False).indices] = True
    return keep.view_as(mask) & (mask > 0)


def dual_clipped(loss: torch.Tensor, advantages: torch.Tensor, c: float) -> torch.Tensor:
    """A negative-advantage token's loss capped at -c A (dual clip; c 0: off). loss (b, t), advantages (b,)."""
    if not c:
        return loss
    a = advantages.unsqueeze(-1)
    return torch.where(a < 0, torch.minimum(loss, -a * c), loss)


def top_entropy_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
    epsilon_low: float, epsilon_high: float, rho: float = 0.2, dual_clip: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 80/20 forking-token loss as its authors compute it (Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR,
    get_global_entropy_top_mask with compute_policy_loss_vanilla): PPO's dual-clipped loss on the
    top_share of the micro-batch's tokens by entropy, averaged over those tokens alone: each kept
    token is scaled by valid / kept tokens, so the token mean over the micro-batch (loss_type dapo)
    is their mean; the rest are 0. logp, old_logp, entropy, mask: (b, t); advantages: (b,).
    Returns (loss, low, high)."""
    loss, low, high = clipped_surrogate(logp, old_logp, advantages, epsilon_low, epsilon_high)
    keep = top_share(entropy, mask, rho)
    scale = (mask > 0).sum() / keep.sum().clamp(min=1)
    return dual_clipped(loss, advantages, dual_clip) * keep * scale, low & keep, high & keep


def archer_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
    ref_logp: torch.Tensor, epsilon: float, high_epsilon: float = 0.5, quantile: float = 0.8, kl_coef: float = 0.001,
    dual_clip: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Archer (Wang et al. 2025, dual-token constraints): each completion's tokens above its entropy
    `quantile` (ties below) are high-entropy and clip to [1 - high_epsilon, 1 + high_epsilon], the
    rest to [1 - epsilon, 1 + epsilon]; a negative advantage's loss is capped at -dual_clip A; the
    low-entropy tokens alone add kl_coef x the k3 KL to the start model, averaged over them (each
    token's KL scaled by the completion's tokens over its low-entropy tokens). logp, old_logp,
    entropy, mask, ref_logp: (b, t); advantages: (b,). Returns (loss, low_clipped, high_clipped)."""
    high_entropy = above_quantile(entropy, mask, quantile, inclusive=False)
    eps = torch.where(high_entropy, high_epsilon, epsilon)
    ratio = torch.exp(logp - old_logp)
    a = advantages.unsqueeze(-1)
    loss = dual_clipped(torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - eps, 1 + eps)), advantages, dual_clip)
    low_clipped, high_clipped = (ratio < 1 - eps) & (a < 0), (ratio > 1 + eps) & (a > 0)
    low_entropy = (mask > 0) & ~high_entropy
    share = (mask > 0).sum(-1, keepdim=True) / low_entropy.sum(-1, keepdim=True).clamp(min=1)
    kl = kl_k3(logp, ref_logp.clamp(logp - 20, logp + 20)).clamp(max=10)
    return loss + kl_coef * kl * low_entropy * share, low_clipped, high_clipped


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
) -> torch.Tensor:
    """KL-Cov (Cui et al. 2025): the unclipped policy-gradient loss -A rho on every token, plus
    coef * |log pi - log pi_old| on the max(1, int(ratio * valid tokens)) valid tokens of largest
    Cov. No ratio clipping anywhere. On a fully on-policy minibatch the penalty and its gradient
    are 0. logp, old_logp, mask: (b, t); advantages: (b,). Returns the loss (b, t).
    """
    loss = -advantages.unsqueeze(-1) * torch.exp(logp - old_logp)
    valid = mask > 0
    if not valid.any():
        return loss
    cov = token_covariance(logp, advantages, mask).masked_fill(~valid, -torch.inf)
    count = max(1, int(int(valid.sum()) * ratio))
    chosen = torch.zeros_like(valid).flatten()
    chosen[cov.flatten().topk(count).indices] = True
    penalty = coef * (logp - old_logp).abs()
    return torch.where(chosen.view_as(valid), loss + penalty, loss)


def forward_kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """DPH-RL's forward-KL term per token: u - log u - 1 with u = pi / pi_ref at the token (the k3
    estimate of KL(pi_ref || pi) on samples of pi_ref), log u clamped to [-20, 20] and the value to
    [-10, 10] as in the authors' code. logp, ref_logp: (b, t) -> (b, t), >= 0."""
    log_u = (logp - ref_logp).clamp(-20, 20)
    return (torch.exp(log_u) - log_u - 1).clamp(-10, 10)


# ---- the registries -----------------------------------------------------------------------------

NEEDS = ("entropy", "topk", "reference", "log_z")
CLIP_METRICS = ("clip_ratio/low", "clip_ratio/high", "clip_ratio/region")
TokenMetrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PolicyLoss:
    fn: Callable[..., tuple[torch.Tensor, TokenMetrics]]
    needs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()  # the names of the (b, t) statistics it returns
    every_row: bool = False  # non-zero on rows with zero advantage, so those rows need their forward pass
    preset: dict = field(default_factory=dict)  # the general settings its authors run it with (TrainConfig keys)


@dataclass(frozen=True)
class LossTerm:
    fn: Callable[..., tuple[torch.Tensor, TokenMetrics]]
    coef: Callable[[TrainConfig, float], float]  # (cfg, this step's entropy coefficient) -> coefficient; 0 = off
    needs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()


POLICY_LOSSES: dict[str, PolicyLoss] = {}
LOSS_TERMS: dict[str, LossTerm] = {}


def _check_needs(name: str, needs: tuple[str, ...]) -> None:
    if unknown := set(needs) - set(NEEDS):
        raise ValueError(f"{name}: unknown needs {sorted(unknown)}; a loss may need {', '.join(NEEDS)}")


def register_policy_loss(name: str, needs: tuple[str, ...] = (), metrics: tuple[str, ...] = CLIP_METRICS, every_row: bool = False,
                         preset: dict | None = None):
    """Register `fn(cfg, **inputs) -> (loss (b, t), metrics)` as loss_mode `name`. preset: the
    TrainConfig settings its authors run it with, applied where a run leaves them at their
    defaults (sps.training.config.with_presets)."""
    _check_needs(name, needs)

    def add(fn):
        if name in POLICY_LOSSES:
            raise ValueError(f"a policy loss named {name!r} is already registered")
        POLICY_LOSSES[name] = PolicyLoss(fn, needs, metrics, every_row, dict(preset or {}))
        return fn

    return add


def register_loss_term(name: str, coef: Callable[[TrainConfig, float], float], needs: tuple[str, ...] = (), metrics: tuple[str, ...] = ()):
    """Register `fn(cfg, **inputs) -> (value (b, t), metrics)`, added to every RL loss as
    coef(cfg, entropy_coef) * value whenever that coefficient is not 0 (in registration order)."""
    _check_needs(name, needs)

    def add(fn):
        if name in LOSS_TERMS:
            raise ValueError(f"a loss term named {name!r} is already registered")
        LOSS_TERMS[name] = LossTerm(fn, coef, needs, metrics)
        return fn

    return add


def active_terms(cfg: TrainConfig, entropy_coef: float) -> dict[str, tuple[LossTerm, float]]:
    """The loss terms on in this step, with their coefficients."""
    found = {name: (term, term.coef(cfg, entropy_coef)) for name, term in LOSS_TERMS.items()}
    return {name: (term, coef) for name, (term, coef) in found.items() if coef}


def clip_range(cfg: TrainConfig) -> tuple[float, float]:
    """(epsilon_low, epsilon_high) of PPO's clip; epsilon_high 0 means the same as epsilon."""
    return cfg.epsilon, cfg.epsilon_high or cfg.epsilon


def clip_metrics(low: torch.Tensor, high: torch.Tensor) -> TokenMetrics:
    return {"clip_ratio/low": low, "clip_ratio/high": high, "clip_ratio/region": low | high}


@register_policy_loss("vanilla")
def vanilla_loss(cfg: TrainConfig, *, logp, old_logp, advantages, **_) -> tuple[torch.Tensor, TokenMetrics]:
    """PPO's clipped surrogate."""
    loss, low, high = clipped_surrogate(logp, old_logp, advantages, *clip_range(cfg))
    return loss, clip_metrics(low, high)


@register_policy_loss("simko", needs=("topk",))
def simko_loss(cfg: TrainConfig, *, logp, old_logp, topk_logp, is_top1, entropy, advantages, success, mask, **_):
    """SimKO; its "correct" completions are the successful ones."""
    p = cfg.policy_loss
    loss, low, high = simko_surrogate(logp, old_logp, topk_logp, is_top1, entropy, advantages, success, mask,
                                      *clip_range(cfg), p.simko_alpha, p.simko_entropy_quantile)
    return loss, clip_metrics(low, high)


@register_policy_loss("clip_cov", every_row=True)
def clip_cov_loss(cfg: TrainConfig, *, logp, old_logp, advantages, mask, generator, **_):
    """Clip-Cov."""
    p = cfg.policy_loss
    loss, low, high = clip_cov_surrogate(logp, old_logp, advantages, mask, *clip_range(cfg), p.clip_cov_ratio,
                                         p.clip_cov_lb, p.clip_cov_ub, generator)
    return loss, clip_metrics(low, high)


@register_policy_loss("kl_cov", metrics=(), every_row=True)
def kl_cov_loss(cfg: TrainConfig, *, logp, old_logp, advantages, mask, **_):
    """KL-Cov (no ratio clipping, so no clip statistics)."""
    p = cfg.policy_loss
    return kl_cov_surrogate(logp, old_logp, advantages, mask, p.kl_cov_ratio, p.ppo_kl_coef), {}


@register_policy_loss("dph", needs=("reference",), every_row=True)
def dph_loss(cfg: TrainConfig, *, logp, old_logp, advantages, success, ref_logp, **_):
    """PPO's clipped surrogate plus dph_coef times the forward KL to the start model on successful rollouts."""
    loss, low, high = clipped_surrogate(logp, old_logp, advantages, *clip_range(cfg))
    correct = success.unsqueeze(-1).to(loss.dtype)
    return loss + cfg.policy_loss.dph_coef * correct * forward_kl_k3(logp, ref_logp), clip_metrics(low, high)


@register_policy_loss("top_entropy", needs=("entropy",))
def top_entropy_loss(cfg: TrainConfig, *, logp, old_logp, advantages, entropy, mask, **_):
    """The 80/20 forking-token loss: the policy gradient on the top policy_loss.top_entropy_quantile of the micro-batch's tokens by entropy."""
    p = cfg.policy_loss
    loss, low, high = top_entropy_surrogate(logp, old_logp, advantages, entropy, mask, *clip_range(cfg), p.top_entropy_quantile, p.dual_clip)
    return loss, clip_metrics(low, high)


# wizard-III/ArcherCodeR's scripts: loss_agg_mode seq-mean-token-mean (loss_type grpo) and dynamic
# sampling that drops the groups whose rewards are all equal.
@register_policy_loss("archer", needs=("entropy", "reference"), preset={"loss_type": "grpo", "drop_zero_variance_groups": True})
def archer_loss(cfg: TrainConfig, *, logp, old_logp, advantages, entropy, mask, ref_logp, **_):
    """Archer: a looser clip and no KL on each completion's high-entropy tokens."""
    p = cfg.policy_loss
    loss, low, high = archer_surrogate(logp, old_logp, advantages, entropy, mask, ref_logp, cfg.epsilon, p.archer_high_epsilon,
                                       p.archer_entropy_quantile, p.archer_kl_coef, p.dual_clip)
    return loss, clip_metrics(low, high)


# verl's recipe/flowrl: the loss is the mean over completions (loss_type grpo).
@register_policy_loss("flowrl", needs=("reference", "log_z"), metrics=("flowrl/log_z", "flowrl/residual", "flowrl/weight"), every_row=True,
                      preset={"loss_type": "grpo"})
def flowrl_loss(cfg: TrainConfig, *, logp, old_logp, ref_logp, log_z, advantages, mask, **_):
    """FlowRL's trajectory balance (sps.algorithms.flowrl): w (log Z + mean log pi - beta A - mean log pi_ref)^2 per
    completion, on each of its tokens (loss_type grpo then averages over completions, as the authors do)."""
    loss, residual, weight = trajectory_balance_loss(logp, old_logp, ref_logp, log_z, advantages, mask, cfg.policy_loss.flowrl_beta,
                                                     cfg.policy_loss.flowrl_weight_cap)
    per_token = lambda values: values.unsqueeze(-1).expand_as(logp)  # noqa: E731
    return per_token(loss), {"flowrl/log_z": per_token(log_z.detach()), "flowrl/residual": per_token(residual),
                             "flowrl/weight": per_token(weight)}


@register_loss_term("kl", coef=lambda cfg, entropy_coef: cfg.beta, needs=("reference",), metrics=("kl",))
def kl_term(cfg: TrainConfig, *, logp, ref_logp, **_) -> tuple[torch.Tensor, TokenMetrics]:
    """beta * KL(pi || reference), the k3 estimator per token."""
    kl = kl_k3(logp, ref_logp)
    return kl, {"kl": kl.detach()}


@register_loss_term("entropy_bonus", coef=lambda cfg, entropy_coef: -entropy_coef, needs=("entropy",))
def entropy_term(cfg: TrainConfig, *, entropy, **_) -> tuple[torch.Tensor, TokenMetrics]:
    """- entropy_coef * token entropy (the coefficient fixed, or steered by adaptive_entropy)."""
    return entropy, {}

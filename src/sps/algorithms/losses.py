"""The RL loss pieces as pure tensor functions.

Shapes: B completions, T completion tokens (right-padded), V vocabulary. `mask` (B, T) is 1 on
real completion tokens. Per-token losses are combined by *weights*: `loss = (weights * l).sum()`,
where `loss_weights` encodes the aggregation mode with normalisers computed over the whole
optimisation minibatch (across micro-batches and processes), so splitting a minibatch into
micro-batches or data-parallel ranks never changes the gradient.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("dapo", "grpo", "dr_grpo")


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token_t | ...) under the temperature-scaled policy. logits (B, T, V), tokens (B, T) -> (B, T)."""
    logp = (logits.float() / temperature).log_softmax(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the temperature-scaled next-token distribution. logits (B, T, V) -> (B, T)."""
    logp = (logits.float() / temperature).log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def token_logprobs_topk(
    logits: torch.Tensor, tokens: torch.Tensor, k: int, temperature: float = 1.0, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """token_logprobs plus what SimKO needs, from one log-softmax: logits (B, T, V), tokens (B, T) ->
    (logps (B, T), the policy's own top-k log-probs (B, T, k) with gradients, whether the token is
    the top-1 (B, T) bool, entropy (B, T), with gradients only when entropy_grad)."""
    logp = (logits.float() / temperature).log_softmax(-1)
    top = logp.topk(k, dim=-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), top.values, top.indices[..., 0] == tokens, entropy


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped objective per token: l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A).

    logp, old_logp: (B, T); advantages: (B,). Returns (loss (B, T), low_clipped (B, T), high_clipped (B, T)),
    where low_clipped marks tokens whose ratio fell below 1 - eps_low with A < 0 and high_clipped those
    above 1 + eps_high with A > 0: exactly the tokens that the clip cuts off from the gradient.
    """
    return clipped_ratio_loss(torch.exp(logp - old_logp), advantages.unsqueeze(-1), epsilon_low, epsilon_high)


def clipped_ratio_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """clipped_surrogate given the ratio: ratio (B, T), advantages (B, 1) or per token (B, T)."""
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    low_clipped = (ratio < 1 - epsilon_low) & (advantages < 0)
    high_clipped = (ratio > 1 + epsilon_high) & (advantages > 0)
    return loss, low_clipped, high_clipped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1 with d = ref_logp - logp; >= 0. (B, T)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def loss_weights(
    mask: torch.Tensor, mode: str, num_sequences: int, num_tokens: int, max_completion_length: int
) -> torch.Tensor:
    """Per-token weights that turn per-token losses into the minibatch loss: loss = (weights * l).sum().

    mask: (B, T) for this micro-batch; num_sequences / num_tokens: the counts over the whole
    minibatch (all micro-batches and ranks). Modes:
      "dapo":    token mean over the minibatch, 1 / num_tokens;
      "grpo":    mean over sequences of each sequence's token mean, 1 / (len_i * num_sequences);
      "dr_grpo": token sum over a constant, 1 / (num_sequences * max_completion_length), so a
                 sequence's weight does not depend on its length.
    Returns (B, T).
    """
    mask = mask.float()
    if mode == "dapo":
        return mask / max(num_tokens, 1)
    if mode == "grpo":
        return mask / (mask.sum(-1, keepdim=True).clamp(min=1) * max(num_sequences, 1))
    if mode == "dr_grpo":
        return mask / (max(num_sequences, 1) * max_completion_length)
    raise ValueError(f"loss_type must be one of {', '.join(AGGREGATIONS)} (got {mode!r})")

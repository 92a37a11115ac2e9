"""Group-relative advantages for GRPO-family RL. Pure tensor functions.

Shapes: P prompts, G generations per prompt. Rewards arrive as (P, G); advantages leave as (P, G),
one scalar per completion, broadcast over its tokens by the loss.
"""

from __future__ import annotations

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


ADVANTAGE_ESTIMATORS = {"grpo": grpo_advantages, "rloo": rloo_advantages}


def zero_std_fraction(rewards: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (they carry no RL signal). rewards: (P, G)."""
    return float((rewards.max(dim=1).values == rewards.min(dim=1).values).float().mean())

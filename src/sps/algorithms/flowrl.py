"""FlowRL (Zhu et al. 2025, arXiv 2509.15207): match the reward distribution instead of maximising
reward, by a trajectory-balance loss against a learned log partition function log Z(x).

Per completion y of prompt x (verl's recipe/flowrl, flowrl_actor.py, read for its defaults):

    residual = log Z(x) + mean_t log pi(y_t) - beta * A(x, y) - mean_t log pi_ref(y_t)
    loss     = w * residual^2,   w = min(exp(sum_t log pi(y_t) - log pi_old(y_t)), cap), no gradient

(cap 10 and no lower bound: the recipe's `torch.clamp(imp_w_raw, max=10)`; its flowrl_clip variant,
not the one it runs, clips to [1 - 0.2, 1 + 0.28] instead.)

A is the advantage estimator's output (the authors feed GRPO's group-normalised reward), beta 15,
and log Z(x) is a small network on the mean final hidden state of the prompt's tokens (the authors'
ProjZ: 2 blocks of Linear, GELU, LayerNorm, Dropout 0.1, then Linear to one number), trained with
the policy by the same optimizer. The token means make the residual length-normalised, the
authors' choice; the loss is their mean over completions with loss_type grpo (dapo weights each
completion by its length).
"""

from __future__ import annotations

from pathlib import Path

import torch

HEAD = "log_z_head"  # the policy's submodule holding LogZHead: it trains, clips and checkpoints with the policy
HEAD_FILE = f"{HEAD}.pt"  # its weights in a checkpoint, beside (not inside) the model's own files
DROPOUT = 0.1  # the authors' ProjZ literal


class LogZHead(torch.nn.Module):
    """log Z(x) from a prompt's mean final hidden state: (B, H) -> (B,)."""

    def __init__(self, hidden_size: int, num_layers: int = 3):
        super().__init__()
        blocks = []
        for _ in range(num_layers - 1):
            blocks += [torch.nn.Linear(hidden_size, hidden_size), torch.nn.GELU(), torch.nn.LayerNorm(hidden_size), torch.nn.Dropout(DROPOUT)]
        self.net = torch.nn.Sequential(*blocks, torch.nn.Linear(hidden_size, 1))

    def forward(self, prompt_state: torch.Tensor) -> torch.Tensor:
        return self.net(prompt_state.to(self.net[-1].weight.dtype)).squeeze(-1)


def trajectory_balance_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    log_z: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    weight_cap: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlowRL's loss per completion (module docstring). logp (with gradients), old_logp, ref_logp,
    mask: (b, t); log_z (with gradients), advantages: (b,). Returns (loss, residual, w), each (b,);
    a completion without tokens has residual log Z - beta A."""
    valid = mask > 0
    length = valid.sum(-1).clamp(min=1)

    def token_mean(values: torch.Tensor) -> torch.Tensor:
        return torch.where(valid, values, 0.0).sum(-1) / length

    residual = log_z + token_mean(logp) - beta * advantages - token_mean(ref_logp)
    log_ratio = torch.where(valid, logp - old_logp, 0.0).sum(-1)
    weight = torch.exp(log_ratio.detach()).clamp(max=weight_cap)
    return weight * residual**2, residual.detach(), weight


def attach_log_z_head(model, num_layers: int, checkpoint: Path | None) -> None:
    """Give the policy a LogZHead as its submodule `log_z_head` (float32, on the policy's device),
    with the weights of `checkpoint` when resuming."""
    head = LogZHead(model.config.hidden_size, num_layers).to(next(model.parameters()).device)
    if checkpoint is not None:
        head.load_state_dict(torch.load(checkpoint / HEAD_FILE, weights_only=True))
    model.add_module(HEAD, head)


def split_log_z_head(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A policy's state dict -> (the model's own weights, the log Z head's under its own names; {}
    without one), so the model's folder stays a plain Hugging Face model."""
    prefix = HEAD + "."
    head = {name.removeprefix(prefix): value for name, value in weights.items() if name.startswith(prefix)}
    return {name: value for name, value in weights.items() if not name.startswith(prefix)}, head

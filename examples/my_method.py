"""Your own method in one file, reachable from the command line (docs/method.md, "Your own method"):

    sps train --config configs/testbed/grpo.yaml --plugins examples/my_method.py \\
        --advantage_estimator sign_baseline --loss_mode entropy_weighted

`--plugins` imports this file before the settings are checked, so the names it registers are
valid choices (and `sps train --plugins examples/my_method.py --help` lists them). Nothing under
src/ names them. A loss receives the inputs it declares in `needs` (here the token entropies).
"""

import torch

from sps.algorithms.advantages import register_advantage
from sps.algorithms.losses import clipped_surrogate
from sps.algorithms.policy_losses import clip_metrics, clip_range, register_policy_loss


@register_advantage("sign_baseline")
def sign_baseline(cfg, *, rewards, **_):
    """+1 above the group's mean reward, -1 below it, 0 at it: GRPO's direction without its size. rewards (P, G)."""
    return torch.sign(rewards - rewards.mean(dim=1, keepdim=True)), {}


@register_policy_loss("entropy_weighted", needs=("entropy",))
def entropy_weighted(cfg, *, logp, old_logp, advantages, entropy, **_):
    """PPO's clipped loss with each token weighted by 1 + its entropy (detached): a larger push where
    the policy is unsure. logp, old_logp, entropy: (b, t); advantages: (b,)."""
    loss, low, high = clipped_surrogate(logp, old_logp, advantages, *clip_range(cfg))
    return loss * (1 + entropy.detach()), clip_metrics(low, high)

"""An exact small model of squeezing: a softmax policy over a finite set of whole trajectories.

One problem has K candidate trajectories, some correct. The policy is pi = softmax(theta) over
them; updates use *expected* gradients (no sampling), so the mechanism shows without noise:

  RL (policy gradient with a mean baseline):  d theta_k = pi_k (r_k - p),  p = correct mass.
      Within the correct set every trajectory gains in proportion to its probability, so the
      likely ones gain most and the distribution over correct trajectories sharpens (squeezing).
  SPS pull (IRL towards demos q):  d theta_k = q_k - pi_k, i.e. the gradient of sum_j q_j log pi_j,
      with q over the correct trajectories weighted softmax(-lambda * log pi) (each distinct one
      once). With lambda > 0, q is flatter than pi on the correct set, so the step spreads the
      correct mass back out.
"""

from __future__ import annotations

import torch

from sps.algorithms.irl import demo_weights


def policy(theta: torch.Tensor) -> torch.Tensor:
    return torch.softmax(theta.double(), dim=0)


def correct_mass(theta: torch.Tensor, correct: torch.Tensor) -> float:
    return float(policy(theta)[correct].sum())


def entropy_within_correct(theta: torch.Tensor, correct: torch.Tensor) -> float:
    """Entropy of the policy restricted to the correct trajectories (renormalised)."""
    q = policy(theta)[correct]
    q = q / q.sum()
    return float(-(q * q.log()).sum())


def rl_step(theta: torch.Tensor, correct: torch.Tensor, lr: float) -> torch.Tensor:
    """One expected policy-gradient step with reward 1 for correct trajectories and a mean baseline."""
    pi = policy(theta)
    reward = correct.double()
    return theta + lr * pi * (reward - (pi * reward).sum())


def pull_step(theta: torch.Tensor, correct: torch.Tensor, lr: float, strength: float) -> torch.Tensor:
    """One SPS pull step towards q = demo_weights over the correct trajectories."""
    pi = policy(theta)
    q = torch.zeros_like(pi)
    q[correct] = demo_weights(pi[correct].log(), strength).double()
    return theta + lr * (q - pi)

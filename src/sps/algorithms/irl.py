"""The SPS inverse-RL step as pure functions: which trajectories are demonstrations, how they are
weighted, and the loss that fits the policy to them (docs/method.md, "The IRL phase").

With the reward parameterised by the policy, the max-entropy IRL step is min KL(q || pi_theta):
raise the likelihood of demonstrations drawn from q. On plain on-policy samples that gradient is
zero in expectation, so the effect comes from q: demonstrations are the *correct* trajectories,
each distinct one counted once, tilted towards those the policy finds unlikely. That makes q
flatter than pi over correct trajectories, moving mass from the squeezed head to the rare ones.

Shapes: k candidate trajectories of one prompt; mean_logps (k,) are length-normalised
log-likelihoods (mean token log-prob) under the rollout policy; counts (k,) how many times each
was sampled.
"""

from __future__ import annotations

import torch

from sps.algorithms.losses import clipped_surrogate, kl_k3

DEMO_SELECTIONS = ("correct", "all", "correct_low_likelihood")


def select_demos(correct: torch.Tensor, mean_logps: torch.Tensor, demos: str, quantile: float = 0.5) -> torch.Tensor:
    """Indices of the demonstrations among k candidates.

    correct: (k,) bool; mean_logps: (k,). "correct": the correct ones; "all": every candidate;
    "correct_low_likelihood": the correct ones whose mean log-prob is among the lowest `quantile`
    fraction of the correct ones (at least one). Returns (d,) long, d <= k (possibly 0).
    """
    if demos == "all":
        return torch.arange(len(correct))
    if demos not in DEMO_SELECTIONS:
        raise ValueError(f"demos must be one of {', '.join(DEMO_SELECTIONS)} (got {demos!r})")
    chosen = correct.nonzero().squeeze(-1)
    if demos == "correct_low_likelihood" and len(chosen) > 1:
        keep = max(1, int(round(quantile * len(chosen))))
        chosen = chosen[mean_logps[chosen].argsort()[:keep]]
    return chosen


def first_of_each(texts: list[str], indices: torch.Tensor) -> torch.Tensor:
    """Keep the first index of every distinct text: each distinct trajectory counts once. (d,) -> (d',)."""
    seen, keep = set(), []
    for i in indices.tolist():
        if texts[i] not in seen:
            seen.add(texts[i])
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def demo_weights(mean_logps: torch.Tensor, strength: float, max_weight: float = 1.0) -> torch.Tensor:
    """w = softmax(-strength * mean_logps), no single weight above max_weight, summing to 1.

    mean_logps: (d,) with d >= 1. strength 0 gives uniform weights; strength > 0 favours the
    demos the policy finds least likely (a negative strength favours the likely ones, which is
    what `push` uses). A cap below 1/d cannot hold and yields uniform weights. Returns (d,).
    """
    weights = torch.softmax(-strength * mean_logps.double(), dim=0)
    cap = max(max_weight, 1.0 / len(weights))
    # Clip the heaviest weights to the cap and hand the excess to the rest, in proportion, until
    # none is above it (at most d rounds; each round fixes at least one weight at the cap).
    for _ in range(len(weights)):
        over = weights > cap + 1e-12
        if not over.any():
            break
        excess = (weights[over] - cap).sum()
        weights[over] = cap
        free = weights < cap - 1e-12
        weights[free] += excess * weights[free] / weights[free].sum()
    return weights.float()


def likelihood_score(mean_logps: torch.Tensor, counts: torch.Tensor, learned_reward: torch.Tensor | None) -> torch.Tensor:
    """How likely the policy finds each demo, by its mean token log-likelihood. (d,), (d,) -> (d,)."""
    return mean_logps


def frequency_score(mean_logps: torch.Tensor, counts: torch.Tensor, learned_reward: torch.Tensor | None) -> torch.Tensor:
    """How likely the policy finds each demo, by how often it was sampled: log count. A trajectory
    the policy samples 8 times as often gets 8^-lambda of the weight, whatever its length. (d,), (d,) -> (d,)."""
    return counts.double().clamp_min(1).log()


def adversarial_score(mean_logps: torch.Tensor, counts: torch.Tensor, learned_reward: torch.Tensor | None) -> torch.Tensor:
    """How policy-like each demo looks to a discriminator trained to tell demonstrations from fresh
    rollouts: minus its logit, the learned reward r = log D - log(1 - D) of adversarial IRL. The
    weights softmax(lambda r) are a reward-weighted regression step on that reward. (d,) -> (d,)."""
    if learned_reward is None:
        raise ValueError("demo_weighting adversarial needs the discriminator's reward of each demo")
    return -learned_reward


# sps.demo_weighting -> the score s whose softmax(-lambda * s) weights a prompt's demos.
DEMO_SCORES = {"likelihood": likelihood_score, "frequency": frequency_score, "adversarial": adversarial_score}


def ngram_features(sequences: list[list[int]], dim: int, orders: tuple[int, ...] = (1, 2, 3)) -> torch.Tensor:
    """Each sequence's n-grams of every order, hashed into `dim` buckets: per order, the count in each
    bucket divided by the sequence's number of n-grams of that order, so length does not weigh.
    The hash is arithmetic on the token ids (not Python's salted hash()), so features, and the
    discriminator trained on them, are the same in every process and after a resume. Returns (n, dim)."""
    features = torch.zeros(len(sequences), dim, dtype=torch.float64)
    for i, seq in enumerate(sequences):
        for n in orders:
            grams = [seq[t : t + n] for t in range(len(seq) - n + 1)]
            for gram in grams:
                bucket = n
                for token in gram:
                    bucket = (bucket * 1_000_003 + token + 1) % 2_147_483_647
                features[i, bucket % dim] += 1.0 / len(grams)
    return features


def discriminator_loss(logits: torch.Tensor, is_demo: torch.Tensor) -> torch.Tensor:
    """Logistic loss of a demonstration-vs-rollout discriminator, each class's mean weighing half, so
    at its optimum D = q / (q + pi) and the logit is log q - log pi: the demonstrations' density
    over the policy's, whatever the class sizes. logits, is_demo (bool): (n,) -> a scalar."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, is_demo.to(logits.dtype), reduction="none")
    return 0.5 * (losses[is_demo].mean() + losses[~is_demo].mean())


def all_tokens(sequences: list[list[int]], width: int) -> torch.Tensor:
    """Every token of every demo. Returns (d, width) bool, False on padding."""
    mask = torch.zeros(len(sequences), width, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        mask[i, : len(seq)] = True
    return mask


def fork_tokens(sequences: list[list[int]], width: int) -> torch.Tensor:
    """The tokens where a prompt's demos fork: token t of demo i is marked when the demos that
    share its first t tokens continue with more than one distinct token there. A demo alone,
    or the shared stem of several, has no fork tokens. Returns (d, width) bool."""
    root: dict = {}  # a trie of the demos: token -> children
    for seq in sequences:
        node = root
        for token in seq:
            node = node.setdefault(token, {})
    mask = torch.zeros(len(sequences), width, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        node = root
        for t, token in enumerate(seq):
            mask[i, t] = len(node) > 1
            node = node[token]
    return mask


# sps.irl_tokens -> which tokens of a prompt's demos the IRL loss acts on.
IRL_TOKEN_SCOPES = {"all": all_tokens, "fork": fork_tokens}


def weight_stats(weights: torch.Tensor) -> tuple[float, float]:
    """(effective number of demonstrations 1 / sum w^2, entropy of w) for weights summing to 1."""
    effective = float(1.0 / (weights.double() ** 2).sum())
    entropy = float(-(weights.double() * weights.double().clamp_min(1e-30).log()).sum())
    return effective, entropy


def irl_token_weights(mask: torch.Tensor, demo_weight: torch.Tensor) -> torch.Tensor:
    """Per-token weights of the IRL loss: each demo's weight spread evenly over its tokens, so a
    demo contributes its mean token log-likelihood times its weight.

    mask: (b, T) the tokens the loss acts on; demo_weight: (b,) >= 0: the demo's weight within its prompt, times the
    coefficient of its term, divided by the number of prompts with demonstrations (so the loss
    is a mean over prompts). Returns (b, T).
    """
    return mask.float() * (demo_weight.float() / mask.sum(-1).clamp(min=1)).unsqueeze(-1)


def irl_token_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, direction: torch.Tensor, epsilon: float, beta: float = 0.0
) -> torch.Tensor:
    """Per-token IRL loss inside a trust region around the rollout policy.

    direction: (b,) +1 for `pull` (raise log pi of the demo) and -1 for `push` (lower it). The
    surrogate is PPO's clipped objective with the direction as the advantage, so a token stops
    receiving gradient once its ratio to the rollout policy leaves [1 - eps, 1 + eps] in the
    direction being pushed; beta adds KL(pi || pi_rollout) (k3). logp, old_logp: (b, T). Returns (b, T).
    """
    loss, _, _ = clipped_surrogate(logp, old_logp, direction.float(), epsilon, epsilon)
    if beta:
        loss = loss + beta * kl_k3(logp, old_logp)
    return loss

"""Advantages for GRPO-family RL, and the shapings around them. Pure tensor functions.

Shapes: P prompts, G generations per prompt. Rewards arrive as (P, G); advantages leave as (P, G),
one scalar per completion, broadcast over its tokens by the loss.

Methods are registered by the name users select them by (verl's `adv_estimator` vocabulary where
one exists), each with one signature, and return (value, metrics dict):
  an estimator:      fn(cfg, *, rewards, success, step) -> (advantages, metrics)
  a reward shaping:  fn(cfg, *, values, rewards, success, mean_logps, answers, problem_ids, state)
                     -> (values, metrics)
cfg is the run's TrainConfig (a method's own knobs live in its `advantage` section); rewards are
the rollouts' summed rewards (P, G), success whether each reached success_threshold (P, G) bool,
mean_logps their mean token log-probs under the rollout policy, answers their final answers (P
lists of G normalised strings, None where there is none), problem_ids the prompts' ids, step the
training step, and state a shaping's own dict, kept across steps and in checkpoints. Shapings
run in registration order, each the identity when its knob is off: those of stage "rewards" turn
the rewards into what the estimator sees, those of stage "advantages" turn its advantages into
the ones the loss uses. docs/baselines.md gives each method's source and defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from sps.training.config import TrainConfig

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


def focal_weights(success: torch.Tensor, gamma: float) -> torch.Tensor:
    """F-GRPO's focal weight (Plyusov et al. 2026): (1 - the group's success rate)^gamma, one scalar
    per prompt, to multiply any estimator's advantages with, so easy prompts push less. success:
    (P, G) bool. gamma 0 gives 1 everywhere; an all-correct group gets 0. Returns (P, G) float.
    """
    rate = success.float().mean(dim=1, keepdim=True)
    return (1 - rate).pow(gamma).expand(success.shape)


def unlikeliness_rewards(
    rewards: torch.Tensor, success: torch.Tensor, mean_logps: torch.Tensor, penalty: float, only_mixed_groups: bool = True
) -> torch.Tensor:
    """The unlikeliness reward (He et al. 2025): a successful rollout's reward times
    (1 - penalty * rank_i / G), rank 0 for the rollout with the lowest mean token log-prob in its
    group, so the likeliest correct rollout earns least; other rewards are unchanged. Reward
    shaping: the result goes to an advantage estimator (GRPO in the paper).

    only_mixed_groups: the authors drop groups with no or only successful rollouts before shaping;
    here such a group keeps its rewards unshaped, so GRPO gives it zero advantage as dropping
    would (without it an all-correct group learns from its ranks alone). Ties keep rollout order.
    rewards, mean_logps: (P, G); success (P, G) bool. penalty 0 returns the rewards. Returns (P, G).
    """
    ranks = mean_logps.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    shaped = torch.where(success, rewards * (1 - penalty * ranks / rewards.shape[1]), rewards)
    if not only_mixed_groups:
        return shaped
    mixed = success.any(dim=1, keepdim=True) & ~success.all(dim=1, keepdim=True)
    return torch.where(mixed, shaped, rewards)


def fill_unscored(rewards: torch.Tensor) -> torch.Tensor:
    """Rewards with each NaN (an unscored rollout, left out of the loss) replaced by the mean of its
    group's scored rewards (0 when none is scored), so it moves neither the baseline nor the scale
    much. rewards: (P, G) -> (P, G); unchanged when nothing is NaN."""
    unscored = rewards.isnan()
    if not unscored.any():
        return rewards
    scored = (~unscored).sum(1, keepdim=True)
    mean = rewards.nan_to_num(0.0).sum(1, keepdim=True) / scored.clamp(min=1)
    return torch.where(unscored, mean.expand_as(rewards), rewards)


def scheduled_k(k: int, final_k: int, switch_step: int, step: int) -> int:
    """PKPO's annealing: k before switch_step, final_k from it on (switch_step 0: never switch)."""
    return final_k if 0 < switch_step <= step else k


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


# ---- the registries -----------------------------------------------------------------------------

Metrics = dict[str, float]
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., tuple[torch.Tensor, Metrics]]] = {}


@dataclass(frozen=True)
class Shaping:
    fn: Callable[..., tuple[torch.Tensor, Metrics]]
    stage: str  # "rewards": changes what the estimator sees | "advantages": changes its output


REWARD_SHAPINGS: dict[str, Shaping] = {}
SHAPING_STAGES = ("rewards", "advantages")


def register_advantage(name: str):
    """Register `fn(cfg, *, rewards, success, step) -> (advantages, metrics)` as advantage_estimator `name`."""

    def add(fn):
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"an advantage estimator named {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return add


def register_reward_shaping(name: str, stage: str = "rewards"):
    """Register `fn(cfg, *, values, rewards, success, mean_logps) -> (values, metrics)`, the identity
    when its knob is off, applied at `stage` of every advantage computation (in registration order)."""
    if stage not in SHAPING_STAGES:
        raise ValueError(f"a shaping's stage is one of {', '.join(SHAPING_STAGES)} (got {stage!r})")

    def add(fn):
        if name in REWARD_SHAPINGS:
            raise ValueError(f"a reward shaping named {name!r} is already registered")
        REWARD_SHAPINGS[name] = Shaping(fn, stage)
        return fn

    return add


def compute_advantages(
    cfg: TrainConfig, rewards: torch.Tensor, success: torch.Tensor, mean_logps: torch.Tensor, step: int,
    answers: list[list[str | None]] | None = None, problem_ids: list[str] | None = None, state: dict | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """The run's advantages of a batch: the "rewards" shapings, the chosen estimator, then the
    "advantages" shapings. rewards, mean_logps: (P, G); success: (P, G) bool; answers, problem_ids
    and state (the shapings' dicts by name, updated in place) as the module docstring says.
    Returns ((P, G), metrics)."""
    metrics: Metrics = {}
    state = {} if state is None else state
    answers = answers or [[None] * rewards.shape[1] for _ in range(rewards.shape[0])]
    problem_ids = problem_ids or [str(i) for i in range(rewards.shape[0])]

    def shape(stage: str, values: torch.Tensor) -> torch.Tensor:
        for name, shaping in REWARD_SHAPINGS.items():
            if shaping.stage == stage:
                values, found = shaping.fn(cfg, values=values, rewards=rewards, success=success, mean_logps=mean_logps,
                                           answers=answers, problem_ids=problem_ids, state=state.setdefault(name, {}))
                metrics.update(found)
        return values

    shaped = shape("rewards", rewards)
    advantages, found = ADVANTAGE_ESTIMATORS[cfg.advantage_estimator](cfg, rewards=shaped, success=success, step=step)
    metrics.update(found)
    return shape("advantages", advantages), metrics


@register_advantage("grpo")
def _grpo(cfg: TrainConfig, *, rewards: torch.Tensor, **_) -> tuple[torch.Tensor, Metrics]:
    """Group mean baseline, scaled by scale_rewards."""
    return grpo_advantages(rewards, cfg.scale_rewards), {}


@register_advantage("rloo")
def _rloo(cfg: TrainConfig, *, rewards: torch.Tensor, **_) -> tuple[torch.Tensor, Metrics]:
    """Leave-one-out baseline, scaled by scale_rewards."""
    return rloo_advantages(rewards, cfg.scale_rewards), {}


def _k(cfg: TrainConfig, step: int) -> int:
    a = cfg.advantage
    return scheduled_k(a.k, a.k_final, a.k_switch_step, step)


@register_advantage("passk")
def _passk(cfg: TrainConfig, *, success: torch.Tensor, step: int, **_) -> tuple[torch.Tensor, Metrics]:
    """Pass@k Training on success (defined on 0/1 outcomes)."""
    k = _k(cfg, step)
    return passk_advantages(success.float(), k), {"advantage/k": float(k)}


@register_advantage("pkpo")
def _pkpo(cfg: TrainConfig, *, rewards: torch.Tensor, step: int, **_) -> tuple[torch.Tensor, Metrics]:
    """PKPO's s^(loo-1) on the rewards (defined on any reward values: the best of k rewards)."""
    k = _k(cfg, step)
    return pkpo_advantages(rewards, k), {"advantage/k": float(k)}


@register_advantage("grpo_passk")
def _best_of_group(cfg: TrainConfig, *, rewards: torch.Tensor, **_) -> tuple[torch.Tensor, Metrics]:
    """The group's best minus its second best, on the rewards; divided by the std unless scale_rewards is none."""
    if cfg.scale_rewards not in ("group", "none"):
        raise ValueError(f"grpo_passk divides by the group std or not: scale_rewards must be group or none (got {cfg.scale_rewards!r})")
    return best_of_group_advantages(rewards, cfg.scale_rewards == "group"), {}


@register_advantage("w_reinforce")
def _w_reinforce(cfg: TrainConfig, *, success: torch.Tensor, **_) -> tuple[torch.Tensor, Metrics]:
    """+lambda on success, -1 otherwise (defined on 0/1 outcomes)."""
    return w_reinforce_advantages(success.float(), cfg.advantage.positive_weight), {}


@register_reward_shaping("unlikeliness", stage="rewards")
def _unlikeliness(cfg: TrainConfig, *, values, success, mean_logps, **_) -> tuple[torch.Tensor, Metrics]:
    """advantage.rank_penalty > 0: the unlikeliness reward on successful rollouts."""
    a = cfg.advantage
    if not a.rank_penalty:
        return values, {}
    return unlikeliness_rewards(values, success, mean_logps, a.rank_penalty, a.rank_mixed_groups_only), {}


@register_reward_shaping("focal", stage="advantages")
def _focal(cfg: TrainConfig, *, values, success, **_) -> tuple[torch.Tensor, Metrics]:
    """advantage.focal_gamma > 0: F-GRPO's (1 - success rate)^gamma on any estimator's advantages."""
    if not cfg.advantage.focal_gamma:
        return values, {}
    return values * focal_weights(success, cfg.advantage.focal_gamma), {}


def max_rl_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """MaxRL (arXiv 2602.02710; prime-rl's `max_rl`): A_i = (r_i - mean(r)) / mean(r), the group's
    centred reward over its mean rather than its std, so a prompt solved with probability p weighs
    about 1/p. Rewards are non-negative (canonically 0/1); a group whose mean is <= 0 gets zero
    advantages. rewards: (P, G). Returns (P, G)."""
    mean = rewards.mean(dim=1, keepdim=True)
    return torch.where(mean > 0, (rewards - mean) / mean.clamp(min=torch.finfo(rewards.dtype).tiny), 0.0)


@register_advantage("max_rl")
def _max_rl(cfg: TrainConfig, *, rewards: torch.Tensor, **_) -> tuple[torch.Tensor, Metrics]:
    """MaxRL on the rewards (no knob)."""
    return max_rl_advantages(rewards), {}


def ucb_bonus(counts: torch.Tensor) -> torch.Tensor:
    """Outcome-based exploration's historical bonus min(1, 1/sqrt(N)), N the times an answer was
    sampled for its problem before (an unseen answer gets 1). counts: (P, G) -> (P, G)."""
    return counts.double().clamp(min=1).rsqrt().float()


def repeated_answer_penalty(answers: list[list[str | None]]) -> torch.Tensor:
    """Outcome-based exploration's batch bonus: -(1/G) x the group's other rollouts with the same
    final answer (a rollout without an answer counts as the answer None). (P, G) -> (P, G)."""
    return torch.tensor([[-(group.count(a) - 1) / len(group) for a in group] for group in answers])


OUTCOME_BONUSES = ("none", "ucb_con", "ucb_mean", "batch")


@register_reward_shaping("outcome_bonus", stage="advantages")
def _outcome_bonus(cfg: TrainConfig, *, values, answers, problem_ids, state, **_) -> tuple[torch.Tensor, Metrics]:
    """advantage.outcome_bonus: outcome-based exploration (Song, Kempe & Munos 2025), c x a bonus
    added to every rollout's advantage after the estimator, correct or not. The historical variants
    count, per problem, how often each final answer was sampled in earlier steps (state["counts"],
    checkpointed); this step's answers join the counts after its bonus is computed."""
    a = cfg.advantage
    if a.outcome_bonus == "none":
        return values, {}
    if a.outcome_bonus == "batch":
        bonus = repeated_answer_penalty(answers)
    else:
        counts = state.setdefault("counts", {})
        seen = torch.tensor([[counts.get(pid, {}).get(ans, 0) for ans in group] for pid, group in zip(problem_ids, answers, strict=True)])
        ucb = ucb_bonus(seen)
        bonus = ucb - (ucb.mean(dim=1, keepdim=True) if a.outcome_bonus == "ucb_mean" else a.outcome_bonus_baseline)
        for pid, group in zip(problem_ids, answers, strict=True):
            table = counts.setdefault(pid, {})
            for ans in group:
                table[ans] = table.get(ans, 0) + 1  # None (no answer) is its own key, apart from the answer "None"
    return values + a.outcome_bonus_coef * bonus, {"outcome_bonus/mean": float(bonus.mean())}

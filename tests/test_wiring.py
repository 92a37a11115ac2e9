"""Every registered method is reached by the trainer with the right inputs: on a fixed batch, the
RL loss the trainer builds (sps.training.trainer.rl_part) equals the method's pure function called
by hand. Rewards are real-valued so that an estimator given the rewards and one given the
successes differ. A new registry entry fails the first test of its kind until it has a case here."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sps.algorithms import advantages as adv
from sps.algorithms import policy_losses as pl
from sps.algorithms.flowrl import trajectory_balance_loss
from sps.algorithms.losses import clipped_surrogate, kl_k3
from sps.evaluation.runner import stable_seed
from sps.grading.base import Grade
from sps.models.loading import load_policy
from sps.rollout.base import Completion
from sps.tasks.problem import Problem
from sps.training.batch import PolicyForward, collate, policy_logprobs
from sps.training.config import TrainConfig
from sps.training.distributed import World
from sps.training.rollouts import record_rollouts
from sps.training.trainer import rl_part

REWARDS = torch.tensor([[1.0, 0.4, 0.0, 1.2], [0.0, 0.7, 1.0, 0.0]])
SUCCESS = REWARDS >= 1.0
STEP = 3


def rollouts():
    generator = torch.Generator().manual_seed(0)
    prompts = [[3, 4, 5], [6, 7]]
    groups = []
    for p in range(2):
        group = []
        for g in range(4):
            ids = [8 + (p + g + t) % 9 for t in range(2 + (p + g) % 3)]
            logps = (-torch.rand(len(ids), generator=generator) * 2).tolist()
            group.append(Completion(ids, f"c{p}{g}", logps, "stop", [0.5] * len(ids)))
        groups.append(group)
    batch = collate(prompts, groups, pad_id=0)
    problems = [Problem(f"p{p}", "q", "a") for p in range(2)]
    grades = [Grade(bool(s), "ok") for s in SUCCESS.flatten()]
    return record_rollouts(World(), problems, prompts, groups, grades, batch, REWARDS, SUCCESS)


def trainer_loss(cfg: TrainConfig, forward: PolicyForward, reference=None, entropy_coef: float = 0.0):
    record = rollouts()
    reference_logps = None if reference is None else lambda rows: policy_logprobs(reference, rows, cfg.temperature)[0]
    part = rl_part(cfg, World(), reference_logps, record, record.batch, 0, STEP, entropy_coef, {})
    return part.token_loss(forward, torch.arange(8)), record, part


def on_policy(record) -> PolicyForward:
    return PolicyForward(record.batch.old_logps.clone())


# ---- advantage estimators and shapings: with ratio 1, PPO's per-token loss is -A ---------------------

K = 2
ESTIMATORS = {
    "grpo": lambda r, s, m: adv.grpo_advantages(r, "group"),
    "rloo": lambda r, s, m: adv.rloo_advantages(r, "group"),
    "passk": lambda r, s, m: adv.passk_advantages(s.float(), K),
    "pkpo": lambda r, s, m: adv.pkpo_advantages(r, K),
    "grpo_passk": lambda r, s, m: adv.best_of_group_advantages(r),
    "w_reinforce": lambda r, s, m: adv.w_reinforce_advantages(s.float(), 0.1),
    "max_rl": lambda r, s, m: adv.max_rl_advantages(r),
}
SHAPINGS = {  # each on top of GRPO, with its knob on
    "unlikeliness": ({"rank_penalty": 0.25}, lambda r, s, m: adv.grpo_advantages(adv.unlikeliness_rewards(r, s, m, 0.25))),
    "focal": ({"focal_gamma": 0.5}, lambda r, s, m: adv.grpo_advantages(r) * adv.focal_weights(s, 0.5)),
    # The batch variant needs the groups' answers: all eight rollouts' graded answers are None, so
    # each rollout shares its answer with the 3 others of its group.
    "outcome_bonus": ({"outcome_bonus": "batch"}, lambda r, s, m: adv.grpo_advantages(r) + 0.2 * -3 / 4),
}


def advantages_seen(cfg: TrainConfig) -> torch.Tensor:
    record = rollouts()
    (loss, _), record, _ = trainer_loss(cfg, on_policy(record))
    return -loss[:, 0].view(2, 4), record


def test_every_estimator_and_shaping_has_a_wiring_case():
    assert set(ESTIMATORS) == set(adv.ADVANTAGE_ESTIMATORS)
    assert set(SHAPINGS) == set(adv.REWARD_SHAPINGS)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_the_trainer_uses_the_estimators_advantages(name):
    cfg = TrainConfig(advantage_estimator=name, advantage=replace(TrainConfig().advantage, k=K))
    seen, record = advantages_seen(cfg)
    expected = ESTIMATORS[name](REWARDS, SUCCESS, record.everywhere.mean_logps)
    assert torch.allclose(seen, expected, atol=1e-6), (seen, expected)


@pytest.mark.parametrize("name", SHAPINGS)
def test_the_trainer_applies_each_shaping(name):
    knobs, reference = SHAPINGS[name]
    seen, record = advantages_seen(TrainConfig(advantage=replace(TrainConfig().advantage, **knobs)))
    assert torch.allclose(seen, reference(REWARDS, SUCCESS, record.everywhere.mean_logps), atol=1e-6)
    assert not torch.allclose(seen, adv.grpo_advantages(REWARDS), atol=1e-3)  # the shaping changed something


# ---- policy losses and loss terms: off-policy, with everything a loss may read -------------------


@pytest.fixture(scope="module")
def reference(random_llama):
    return load_policy(str(random_llama), "float32", "cpu")[0]


def forward_with_all(record) -> PolicyForward:
    generator = torch.Generator().manual_seed(1)
    old = record.batch.old_logps
    logps = (old + 0.3 * torch.randn(old.shape, generator=generator)).requires_grad_()
    topk = -torch.rand(*old.shape, 3, generator=generator).requires_grad_()
    entropy = (torch.rand(old.shape, generator=generator) * 2).requires_grad_()
    is_top1 = torch.rand(old.shape, generator=generator) > 0.5
    log_z = torch.randn(old.shape[0], generator=generator).requires_grad_()
    return PolicyForward(logps, entropy, topk, is_top1, log_z)


def by_hand(name: str, cfg: TrainConfig, f: PolicyForward, record, ref_logp) -> torch.Tensor:
    old, mask = record.batch.old_logps, record.batch.completion_mask
    a = adv.grpo_advantages(REWARDS).flatten()
    s, p = SUCCESS.flatten(), cfg.policy_loss
    if name == "vanilla":
        return clipped_surrogate(f.logps, old, a, 0.2, 0.2)[0]
    if name == "simko":
        return pl.simko_surrogate(f.logps, old, f.topk_logps, f.is_top1, f.entropy, a, s, mask, 0.2, 0.2, p.simko_alpha, p.simko_entropy_quantile)[0]
    if name == "clip_cov":
        generator = torch.Generator().manual_seed(stable_seed(cfg.seed, STEP, "policy_loss"))
        return pl.clip_cov_surrogate(f.logps, old, a, mask, 0.2, 0.2, p.clip_cov_ratio, p.clip_cov_lb, p.clip_cov_ub, generator)[0]
    if name == "kl_cov":
        return pl.kl_cov_surrogate(f.logps, old, a, mask, p.kl_cov_ratio, p.ppo_kl_coef)
    if name == "top_entropy":
        return pl.top_entropy_surrogate(f.logps, old, a, f.entropy, mask, 0.2, 0.2, p.top_entropy_quantile, p.dual_clip)[0]
    if name == "archer":
        return pl.archer_surrogate(f.logps, old, a, f.entropy, mask, ref_logp, 0.2, p.archer_high_epsilon, p.archer_entropy_quantile,
                                   p.archer_kl_coef, p.dual_clip)[0]
    if name == "flowrl":
        per_completion = trajectory_balance_loss(f.logps, old, ref_logp, f.log_z, a, mask, p.flowrl_beta, p.flowrl_weight_cap)[0]
        return per_completion.unsqueeze(-1).expand_as(old)
    if name == "dph":
        return clipped_surrogate(f.logps, old, a, 0.2, 0.2)[0] + p.dph_coef * s.unsqueeze(-1) * pl.forward_kl_k3(f.logps, ref_logp)
    raise AssertionError(f"no wiring case for policy loss {name!r}")


def test_every_policy_loss_and_term_has_a_wiring_case():
    assert set(pl.POLICY_LOSSES) == set(LOSSES)
    assert set(pl.LOSS_TERMS) == {"kl", "entropy_bonus"}


LOSSES = ["vanilla", "simko", "clip_cov", "kl_cov", "dph", "top_entropy", "archer", "flowrl"]


@pytest.mark.parametrize("name", LOSSES)
def test_the_trainer_computes_each_policy_loss(name, reference):
    cfg = TrainConfig(loss_mode=name, policy_loss=replace(TrainConfig().policy_loss, clip_cov_ratio=0.2, simko_alpha=0.3))
    record = rollouts()
    forward = forward_with_all(record)
    (loss, stats), record, part = trainer_loss(cfg, forward, reference)
    ref_logp = policy_logprobs(reference, record.batch, cfg.temperature)[0].detach()
    mask = record.batch.completion_mask.bool()
    assert torch.allclose(loss[mask], by_hand(name, cfg, forward, record, ref_logp)[mask], atol=1e-6)
    assert set(stats) == set(pl.POLICY_LOSSES[name].metrics) == set(part.stat_names)
    assert part.top_k == (3 if name == "simko" else 0)
    assert part.needs_log_z == (name == "flowrl")


def test_the_trainer_adds_the_kl_and_entropy_terms_with_their_coefficients(reference):
    cfg = TrainConfig(beta=0.04)
    record = rollouts()
    forward = forward_with_all(record)
    (loss, stats), record, part = trainer_loss(cfg, forward, reference, entropy_coef=0.01)
    ref_logp = policy_logprobs(reference, record.batch, cfg.temperature)[0].detach()
    expected = by_hand("vanilla", cfg, forward, record, ref_logp) + 0.04 * kl_k3(forward.logps, ref_logp) - 0.01 * forward.entropy
    mask = record.batch.completion_mask.bool()
    assert torch.allclose(loss[mask], expected[mask], atol=1e-6)
    assert "kl" in stats and part.needs_entropy
    assert torch.allclose(stats["kl"][mask], kl_k3(forward.logps, ref_logp).detach()[mask])

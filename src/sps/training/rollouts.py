"""One step's rollouts as one record: sampled, graded and collated once, and what needs the whole
batch gathered from every process once. Metrics, advantages, the SPS buffer, demonstrations and
replay all read it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sps.grading.base import Grade
from sps.rollout.base import Completion
from sps.tasks.problem import Problem
from sps.training.batch import RolloutBatch
from sps.training.distributed import World


@dataclass
class Gathered:
    """The step's rollouts over all processes, in rank order. P prompts in all, G completions each."""

    problem_ids: list[str]  # P
    rewards: torch.Tensor  # (P, G)
    success: torch.Tensor  # (P, G) bool
    mean_logps: torch.Tensor  # (P, G) mean token log-prob under the rollout policy
    lengths: torch.Tensor  # (P * G,) completion tokens
    truncated: list[bool]  # P * G: cut at max_completion_length
    logp_sums: list[float]  # per process: summed log-probs of the sampled tokens
    entropy_sums: list[float | None]  # per process: summed sampling entropy (None: the engine reports none)
    texts: list[str]  # P * G
    extracted: list[str | None]  # P * G: the graded answers
    statuses: list[str]  # P * G: grading statuses


    def answers(self) -> list[list[str | None]]:
        """The final answers, normalised as majority voting compares them, P lists of G."""
        from sps.evaluation.metrics import normalize_answer

        g = self.rewards.shape[1]
        flat = [normalize_answer(a) for a in self.extracted]
        return [flat[i : i + g] for i in range(0, len(flat), g)]


@dataclass
class Rollouts:
    """This process's share of the step: P prompts, G completions each, row b = completion b % G of prompt b // G."""

    problems: list[Problem]
    prompt_ids: list[list[int]]  # (P,) after the prompt template
    groups: list[list[Completion]]  # P x G
    grades: list[Grade]  # P * G
    batch: RolloutBatch  # P * G rows
    rewards: torch.Tensor  # (P, G)
    success: torch.Tensor  # (P, G) bool
    everywhere: Gathered

    @property
    def problem_ids(self) -> list[str]:
        return [p.id for p in self.problems]


def record_rollouts(
    world: World, problems: list[Problem], prompt_ids: list[list[int]], groups: list[list[Completion]], grades: list[Grade],
    batch: RolloutBatch, rewards: torch.Tensor, success: torch.Tensor,
) -> Rollouts:
    """The step's record, with its one gather of what needs the global batch."""
    lengths = batch.completion_mask.sum(-1)
    local = {
        "problem_ids": [p.id for p in problems],
        "rewards": rewards,
        "success": success,
        "mean_logps": (batch.old_logps.sum(-1) / lengths.clamp(min=1)).view_as(rewards),
        "lengths": lengths,
        "truncated": batch.truncated.tolist(),
        "logp_sum": float((batch.old_logps * batch.completion_mask).sum()),
        "entropy_sum": float((batch.entropies * batch.completion_mask).sum()) if batch.entropies is not None else None,
        "texts": batch.texts,
        "extracted": [g.extracted for g in grades],
        "statuses": [g.status for g in grades],
    }
    parts = world.gather(local)
    everywhere = Gathered(
        problem_ids=[i for p in parts for i in p["problem_ids"]],
        rewards=torch.cat([p["rewards"] for p in parts]),
        success=torch.cat([p["success"] for p in parts]),
        mean_logps=torch.cat([p["mean_logps"] for p in parts]),
        lengths=torch.cat([p["lengths"] for p in parts]),
        truncated=[t for p in parts for t in p["truncated"]],
        logp_sums=[p["logp_sum"] for p in parts],
        entropy_sums=[p["entropy_sum"] for p in parts],
        texts=[t for p in parts for t in p["texts"]],
        extracted=[e for p in parts for e in p["extracted"]],
        statuses=[s for p in parts for s in p["statuses"]],
    )
    return Rollouts(problems, prompt_ids, groups, grades, batch, rewards, success, everywhere)

"""The probe set: correct trajectories of the start model, tracked through training.

At step 0 the distinct correct completions of a fixed subset of held-out problems are stored;
at every evaluation the policy's mean token log-likelihood of each is logged. Squeezing shows as
probes losing likelihood to a few dominant trajectories (the rare ones first, if the likely ones gain).
"""

from __future__ import annotations

from collections import Counter

import torch

from sps.rollout.base import Completion
from sps.tasks.problem import Problem
from sps.tasks.templates import encode_prompt


def select_probes(samples: list[dict], max_problems: int) -> list[dict]:
    """The distinct correct completions of the first `max_problems` solved problems (in sample order).

    samples: rows of an evaluation's samples.jsonl. Returns one dict per probe with its
    problem_id, completion and how often the start model sampled it (count, of n samples)."""
    by_problem: dict[str, list[dict]] = {}
    for row in samples:
        by_problem.setdefault(row["problem_id"], []).append(row)
    probes = []
    solved = [pid for pid, rows in by_problem.items() if any(r["correct"] for r in rows)][:max_problems]
    for pid in solved:
        rows = by_problem[pid]
        counts = Counter(r["completion"] for r in rows if r["correct"])
        for completion, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            probes.append({"probe": len(probes), "problem_id": pid, "completion": completion, "count": count, "n": len(rows)})
    return probes


@torch.no_grad()
def probe_logprobs(model, tokenizer, probes: list[dict], problems: dict[str, Problem], template: str, temperature: float) -> list[float]:
    """Mean token log-likelihood (completion and EOS) of each probe under `model`."""
    from sps.training.batch import collate_rows, policy_logprobs

    if not probes:
        return []
    prompts = [encode_prompt(template, problems[p["problem_id"]].problem, tokenizer) for p in probes]
    completions = []
    for p in probes:
        ids = tokenizer.encode(p["completion"], add_special_tokens=False) + [tokenizer.eos_token_id]
        completions.append(Completion(ids, p["completion"], [0.0] * len(ids), "stop"))
    batch = collate_rows(prompts, completions, tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    logps, _ = policy_logprobs(model, batch, temperature)
    model.train(was_training)
    mask = batch.completion_mask.to(logps.device)
    return ((logps * mask).sum(-1) / mask.sum(-1)).tolist()

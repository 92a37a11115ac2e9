"""Refactors must not change what a run computes: the weights after 3 steps, hashed, for GRPO, SPS's
schedules and the peers, on a tiny random model with a toy reward (a completion that contains a
'7' is correct), against the hashes recorded before the trainer's last restructuring.

A hash changes when any float of any weight changes. When a change is meant to alter the numbers
(a new default, a numerically different forward), rerun with SPS_RECORD_HASHES=1, check that only
the intended runs moved, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest
from safetensors.torch import load_file

from sps.grading.base import Grade
from sps.grading.registry import register_grader
from sps.training.config import TrainConfig
from sps.training.trainer import train


class ContainsSeven:
    """Correct when the completion contains a '7': a random character model earns it about half the time."""

    name = "contains_seven"

    def grade(self, completions, problems):
        return [Grade("7" in c, "ok", c[:8]) for c in completions]

    def close(self):
        pass


register_grader(ContainsSeven.name, ContainsSeven)

SPS = TrainConfig().sps
RUNS = {
    "grpo": {},
    "sps": {"algorithm": "sps"},
    "sps-reuse": {"algorithm": "sps", "sps": replace(SPS, reuse_rollouts=True)},
    "sps-joint": {"algorithm": "sps", "sps": replace(SPS, schedule="joint", joint_coef=1.0)},
    "sps-batch-pullpush": {"algorithm": "sps", "sps": replace(SPS, demo_source="batch", irl_mode="pull_push", push_floor=-5.0)},
    "simko": {"loss_mode": "simko"},
    "dph-kl": {"loss_mode": "dph", "beta": 0.04},
    "pkpo-shaped": {"advantage_estimator": "pkpo", "advantage": replace(TrainConfig().advantage, k=2, rank_penalty=0.25, focal_gamma=0.5)},
    "clip_cov": {"loss_mode": "clip_cov", "policy_loss": replace(TrainConfig().policy_loss, clip_cov_ratio=0.05)},
    "kl_cov": {"loss_mode": "kl_cov", "num_iterations": 2},
    "entropy": {"entropy_coef": 0.01, "adaptive_entropy": replace(TrainConfig().adaptive_entropy, enabled=True, target=5.0)},
    "replay": {"replay_buffer": True},
}
# sha256 over the final weights (name-sorted tensors' bytes), recorded on the trainer before issue 25.
HASHES = {
    "grpo": "dec080fb61d67174711556f0863d13e72ba210776ca41dda492ecf7919e067dd",
    "sps": "b5d9c840b17359a6a041848242c371ad6dc73888c78dbb293fe97fb522afe7a8",
    "sps-reuse": "13e41bdb121ece6190c58507a3759d100b222664ad23fa123adfa02560f35122",
    "sps-joint": "97da7dbb0a2335582a8b7ceb0cec71755e74ce911b958702eddb70a9e4135f36",
    "sps-batch-pullpush": "cdb40da327d9ade86033dc4d12ecdb0bc273cb5876465fbd3cf7b3aedfdaca74",
    "simko": "a4e9c8cb6f7aca98820f8f91c5fe1f490bfacb5ef47214dedb6e5c4a34c96d6b",
    "dph-kl": "8b3d59abc1ff66f30dc8290ef367a2eb8e1f24355ba55fa2970e0c0c9f134198",
    "pkpo-shaped": "ead690862b4b05288a49486a5c2da29536bebea648822bd15966d53d5bb0187e",
    "clip_cov": "84b51fc704b5a6ea1d7dc06e1404ea544d542875521851996f1caf95ddb546b0",
    "kl_cov": "5ace061a8dad1d3bf7970772ae120fdeaf0ba58f090eb8b9bc9a350df212d6be",
    "entropy": "c94b420fefc4ec64c5498d6971e68478586043c217e1c97f051aafc2e407d2bb",
    "replay": "70359a944d8a56eda904bbb44678baa7b0346b16e97ffa9d978ceecfb7f015ce",
}


def weights_hash(folder) -> str:
    tensors = load_file(folder / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", list(RUNS))
def test_three_steps_give_the_recorded_weights(random_llama, tmp_path, name):
    cfg = TrainConfig(
        model=str(random_llama), grader=ContainsSeven.name, train_size=8, prompts_per_step=8, num_generations=4,
        max_completion_length=16, learning_rate=1e-2, max_steps=3, eval_every=-1, probe_problems=0, save_every=3,
        output_dir=str(tmp_path / name), threads=1, **RUNS[name],
    )
    run_dir = train(cfg, show_progress=False)
    found = weights_hash(run_dir / "checkpoints" / "step_000003")
    assert found != weights_hash(random_llama)  # the run learned something, so the hash says something
    if os.environ.get("SPS_RECORD_HASHES"):
        print(f'    "{name}": "{found}",')
        return
    assert found == HASHES[name]

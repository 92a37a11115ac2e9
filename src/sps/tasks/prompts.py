"""Prompt sources for RL: which problems each training step sees, resumable mid-run."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from sps.tasks.problem import Problem

MODES = ("fixed", "stream")


def fixed_prompts(problems: Sequence[Problem], size: int, seed: int) -> list[Problem]:
    """Returns a seeded random subset of `size` problems, the fixed set that RL revisits each epoch."""
    if not 1 <= size <= len(problems):
        raise ValueError(
            f"fixed prompt set size {size} must be between 1 and the {len(problems)} problems given"
        )
    return random.Random(f"{seed}:fixed").sample(list(problems), size)


def _fingerprint(problems: Sequence[Problem]) -> str:
    """Returns a short digest of the problem ids in order, to tell whether a saved state fits."""
    return hashlib.sha256("\n".join(p.id for p in problems).encode()).hexdigest()[:16]


class PromptSource:
    """Yields batches of problems in shuffled epochs; its position can be saved and restored.

    mode "fixed":  epochs over `fixed_prompts(problems, fixed_size, seed)`, so prompts recur.
    mode "stream": epochs over all `problems`, so no prompt recurs until all have been seen.
    Each epoch is a fresh seeded shuffle. A batch that runs past the end of an epoch continues
    into the next one, so every prompt is served once per epoch and none is skipped.
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        batch_size: int,
        mode: str = "fixed",
        fixed_size: int = 512,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"prompt mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
        self.problems = fixed_prompts(problems, fixed_size, seed) if mode == "fixed" else list(problems)
        if not 1 <= batch_size <= len(self.problems):
            raise ValueError(
                f"batch_size {batch_size} must be between 1 and the {len(self.problems)} prompts of the {mode} set"
            )
        self.batch_size = batch_size
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.position = 0  # prompts of the current epoch already served
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        """Returns the shuffled problem indices of one epoch."""
        order = list(range(len(self.problems)))
        random.Random(f"{self.seed}:epoch:{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[Problem]:
        """Returns the next `batch_size` problems and advances the position."""
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            take = min(self.batch_size - len(batch), len(self._order) - self.position)
            batch.extend(self.problems[i] for i in self._order[self.position : self.position + take])
            self.position += take
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Returns the position (plus what it depends on) as plain values for a checkpoint."""
        return {
            "mode": self.mode,
            "seed": self.seed,
            "fingerprint": _fingerprint(self.problems),
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a position saved by `state_dict`; the next batch continues exactly where it left off.

        Raises ValueError when the state was saved for other problems, another mode or seed. The batch
        size may change: the position counts prompts, not batches.
        """
        mine = self.state_dict()
        mismatched = [key for key in ("mode", "seed", "fingerprint") if state.get(key) != mine[key]]
        if mismatched:
            details = ", ".join(f"{key} {state.get(key)!r} vs {mine[key]!r}" for key in mismatched)
            raise ValueError(
                f"prompt source state does not fit this source ({details}); build it with the saved settings"
            )
        self.epoch = state["epoch"]
        self.position = state["position"]
        self._order = self._epoch_order(self.epoch)

"""Checkpoints: the policy as a Hugging Face folder plus the trainer's state, written atomically.

Layout: <run>/checkpoints/step_000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt}.
A checkpoint folder appears under its final name only when complete (see sps.io.atomic_dir), so
whatever `latest_checkpoint` finds can be loaded.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from sps.io import atomic_dir

NAME = re.compile(r"^step_(\d{6,})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, folder), oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, state: dict, keep: int) -> Path:
    """Write the checkpoint of `step` and delete all but the newest `keep`."""
    final = checkpoint_dir(run_dir, step)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
    for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(folder: Path) -> dict:
    # weights_only=False: the state holds RNG states and plain Python containers we wrote ourselves.
    return torch.load(folder / "trainer_state.pt", weights_only=False)

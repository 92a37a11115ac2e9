"""Checkpoints: the policy as a Hugging Face folder plus the trainer's state, written atomically.

Layout: <run>/checkpoints/step_000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt,
optimizer/}. The model files are the full weights gathered on the main process, a plain folder that
`from_pretrained` and vLLM load; optimizer/ is the optimizer state as a torch.distributed.checkpoint
(one file per process, each its own shard), which loads into any number of processes. With several
processes the run folder must be on a filesystem that all of them see.

A checkpoint folder appears under its final name only when complete (see sps.io.atomic_dir), so
whatever `latest_checkpoint` finds can be loaded.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import warnings
from pathlib import Path

import torch

from sps.io import atomic_dir
from sps.training.distributed import World, full_state_dict

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


def save_checkpoint(run_dir: Path, step: int, model, optimizer, tokenizer, state: dict, keep: int, world: World) -> Path:
    """Write the checkpoint of `step` and delete all but the newest `keep` (every process calls it;
    the main process writes all but the optimizer shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    weights = full_state_dict(model)
    optimizer_state = get_optimizer_state_dict(model, optimizer)
    final = checkpoint_dir(run_dir, step)
    with atomic_dir(final) if world.is_main else contextlib.nullcontext() as tmp:
        tmp = Path(world.gather(tmp)[0])  # the main process's temporary folder
        with alone_is_intended():
            dcp.save({"optimizer": optimizer_state}, checkpoint_id=tmp / "optimizer")
        if world.is_main:
            model.save_pretrained(tmp, state_dict=weights)
            tokenizer.save_pretrained(tmp)
            torch.save(state, tmp / "trainer_state.pt")
    if world.is_main:
        for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    world.barrier()  # no process goes on before the checkpoint is complete
    return final


def load_optimizer_state(folder: Path, model, optimizer) -> None:
    """Restore the optimizer state saved by save_checkpoint, each process its own shard."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    if not (folder / "optimizer").is_dir():
        raise FileNotFoundError(f"checkpoint {folder} has no optimizer/ folder (an sps version before FSDP2 wrote it); start a new run")
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # the layout to load into
    with alone_is_intended():
        dcp.load(state, checkpoint_id=folder / "optimizer")
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


@contextlib.contextmanager
def alone_is_intended():
    """torch.distributed.checkpoint warns when there is no process group; a world of one has none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def load_trainer_state(folder: Path) -> dict:
    # weights_only=False: the state holds RNG states and plain Python containers we wrote ourselves.
    return torch.load(folder / "trainer_state.pt", weights_only=False)

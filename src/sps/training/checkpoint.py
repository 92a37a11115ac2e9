"""Checkpoints: the policy as a Hugging Face folder plus the trainer's state, written atomically
and verified before they are resumed from.

Layout: <run>/checkpoints/step_000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt,
optimizer/, manifest.json; a FlowRL run's log_z_head.pt} (a LoRA run: adapter_config.json and adapter_model.safetensors instead of
the model files). manifest.json, written last, holds every other file's size and sha256;
`newest_good_checkpoint` checks them and falls back past a damaged checkpoint. trainer_state.pt
holds only tensors and plain containers, and is loaded with weights_only=True, so resuming from a
folder someone else wrote runs no code of theirs. The model files are the full weights gathered on the main process, a plain folder that
`from_pretrained` and vLLM load; optimizer/ is the optimizer state as a torch.distributed.checkpoint
(one file per process, each its own shard), which loads into any number of processes. With several
processes the run folder must be on a filesystem that all of them see.

A checkpoint folder appears under its final name only when complete (see sps.io.atomic_dir), so
whatever `latest_checkpoint` finds can be loaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import warnings
from pathlib import Path

import torch

from sps.algorithms.flowrl import HEAD_FILE, split_log_z_head
from sps.io import atomic_dir, file_digest
from sps.training.distributed import World, full_state_dict

NAME = re.compile(r"^step_(\d{6,})$")
MANIFEST = "manifest.json"


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


def write_manifest(folder: Path) -> None:
    """Record every file's size and sha256 in folder/manifest.json (the last file written)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_digest(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1) + "\n")


def checkpoint_problem(folder: Path) -> str | None:
    """Why the checkpoint cannot be trusted (a missing, truncated or changed file), or None when its
    manifest vouches for every file. A checkpoint from before manifests is trusted as it is."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None if (folder / "trainer_state.pt").is_file() else "no manifest.json and no trainer_state.pt"
    try:
        entries = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as e:
        return f"manifest.json is unreadable ({e})"
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
        if file_digest(path) != entry["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    return None


def newest_good_checkpoint(run_dir: Path) -> tuple[tuple[int, Path] | None, list[str]]:
    """The newest checkpoint that passes verification, and a message for each newer one skipped."""
    skipped = []
    for step, folder in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return (step, folder), skipped
        skipped.append(f"checkpoint {folder.name} is damaged ({problem}); it is skipped")
    return None, skipped


def save_checkpoint(run_dir: Path, step: int, model, optimizer, tokenizer, state: dict, keep: int, world: World) -> Path:
    """Write the checkpoint of `step` and delete all but the newest `keep` (every process calls it;
    the main process writes all but the optimizer shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    weights, log_z_head = split_log_z_head(full_state_dict(model))
    optimizer_state = get_optimizer_state_dict(model, optimizer)
    final = checkpoint_dir(run_dir, step)
    with atomic_dir(final) if world.is_main else contextlib.nullcontext() as tmp:
        tmp = Path(world.gather(tmp)[0])  # the main process's temporary folder
        with alone_is_intended():
            dcp.save({"optimizer": optimizer_state}, checkpoint_id=tmp / "optimizer")
        if world.is_main:
            model.save_pretrained(tmp, state_dict=weights)
            if log_z_head:  # FlowRL's: outside the model's files, which stay a plain Hugging Face folder
                torch.save(log_z_head, tmp / HEAD_FILE)
            tokenizer.save_pretrained(tmp)
            torch.save(state, tmp / "trainer_state.pt")
            write_manifest(tmp)  # last: a checkpoint without a complete manifest was cut off
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
    """The trainer state of a checkpoint: tensors and plain containers only (weights_only), so
    loading it cannot run code."""
    try:
        return torch.load(folder / "trainer_state.pt", weights_only=True)
    except Exception as e:  # pickle's and torch's errors have many types
        raise ValueError(f"{folder}/trainer_state.pt cannot be read as plain data ({type(e).__name__}: {str(e)[:200]})") from e

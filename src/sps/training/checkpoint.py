"""Checkpoints: the policy as a Hugging Face folder plus the trainer's state, written atomically
and verified before they are resumed from.

Layout: <run>/checkpoints/step_000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt,
optimizer/, manifest.json; a FlowRL run's log_z_head.pt} (a LoRA run: adapter_config.json and adapter_model.safetensors instead of
the model files). manifest.json, written last, holds every other file's size and sha256;
`newest_good_checkpoint` checks them and falls back past a damaged checkpoint. trainer_state.pt
holds only tensors and plain containers, and is loaded with weights_only=True, as is the log Z head;
the optimizer's DCP metadata is unpickled allowing only DCP's own metadata classes, and its shards'
values with weights_only=True; the model and adapter are safetensors. So resuming from a folder
someone else wrote runs no code of theirs (docs/scale.md). The model files are the full weights gathered on the main process, a plain folder that
`from_pretrained` and vLLM load; optimizer/ is the optimizer state as a torch.distributed.checkpoint
(one file per process, each its own shard), which loads into any number of processes. With several
processes the run folder must be on a filesystem that all of them see.

A checkpoint folder appears under its final name only when complete (see sps.io.atomic_dir), so
whatever `latest_checkpoint` finds can be loaded.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import re
import shutil
import warnings
from pathlib import Path

import torch

from sps.algorithms.flowrl import HEAD_FILE, split_log_z_head
from sps.io import DiskFull, atomic_dir, file_digest
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


def checkpoint_files(folder: Path) -> list[str]:
    """Every file in a checkpoint folder but its manifest, relative to the folder."""
    return sorted(name for p in folder.rglob("*") if p.is_file() and (name := str(p.relative_to(folder))) != MANIFEST)


def write_manifest(folder: Path) -> None:
    """Record every file's size and sha256 in folder/manifest.json (the last file written)."""
    entries = {name: {"bytes": (folder / name).stat().st_size, "sha256": file_digest(folder / name)} for name in checkpoint_files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1) + "\n")


def checkpoint_problem(folder: Path) -> str | None:
    """Why the checkpoint cannot be trusted (no manifest, a missing, truncated or changed file, or a
    file the manifest does not list), or None when its manifest vouches for every file. sps writes
    a manifest into every checkpoint, so one without is damaged or not sps's."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no manifest.json, which sps writes last into every checkpoint"
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
    if unlisted := [name for name in checkpoint_files(folder) if name not in entries]:  # planted: nothing may load them
        return f"it holds files its manifest does not list ({', '.join(unlisted)})"
    return None


def newest_good_checkpoint(run_dir: Path) -> tuple[tuple[int, Path] | None, list[tuple[str, str]]]:
    """The newest checkpoint that passes verification, and (name, problem) of each newer one."""
    damaged = []
    for step, folder in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return (step, folder), damaged
        damaged.append((folder.name, problem))
    return None, damaged


def save_checkpoint(run_dir: Path, step: int, model, optimizer, tokenizer, state: dict, keep: int, world: World) -> Path:
    """Write the checkpoint of `step` and delete all but the newest `keep` (every process calls it;
    the main process writes all but the optimizer shards). A full disk raises DiskFull naming the
    folder and the space needed; the temporary folder is removed and the older checkpoints stay."""
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    weights, log_z_head = split_log_z_head(full_state_dict(model))
    optimizer_state = get_optimizer_state_dict(model, optimizer)
    final = checkpoint_dir(run_dir, step)
    previous = latest_checkpoint(run_dir)
    try:
        write_checkpoint(final, model, tokenizer, weights, log_z_head, optimizer_state, state, world)
    except (Exception, CheckpointException) as e:  # DCP's is a BaseException
        if not out_of_space(e):
            raise
        need = space_taken(previous[1]) if previous else tensor_bytes([weights, log_z_head, optimizer_state])
        kept = f"{previous[1].name} is kept" if previous else "no checkpoint was written before"
        raise DiskFull(f"no space left on the device holding {final.parent} for checkpoint {final.name}: it needs about "
                       f"{need / 1e6:,.2f} MB, {shutil.disk_usage(final.parent).free / 1e6:,.2f} MB are free; {kept}: "
                       "free space and rerun the same command to resume") from None
    if world.is_main:
        for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    world.barrier()  # no process goes on before the checkpoint is complete
    return final


def write_checkpoint(final: Path, model, tokenizer, weights: dict, log_z_head: dict, optimizer_state: dict, state: dict, world: World) -> None:
    """The checkpoint's files, into a temporary folder renamed to `final` when all are written."""
    import torch.distributed.checkpoint as dcp

    with atomic_dir(final) if world.is_main else contextlib.nullcontext() as tmp:
        tmp = Path(world.gather(tmp)[0])  # the main process's temporary folder
        with alone_is_intended():
            dcp.save({"optimizer": optimizer_state}, checkpoint_id=tmp / "optimizer")
        if world.is_main:
            model.save_pretrained(tmp, state_dict=weights)
            if log_z_head:  # FlowRL's: outside the model's files, which stay a plain Hugging Face folder
                save_tensors(log_z_head, tmp / HEAD_FILE)
            tokenizer.save_pretrained(tmp)
            save_tensors(state, tmp / "trainer_state.pt")
            write_manifest(tmp)  # last: a checkpoint without a complete manifest was cut off


def save_tensors(obj, path: Path) -> None:
    """torch.save through a Python write, so a full disk is an OSError (ENOSPC), not the zip writer's bare RuntimeError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getvalue())


def out_of_space(error: BaseException | None) -> bool:
    """Whether a failed write ran out of space: an ENOSPC in the chain of causes, or the OS's words
    for it in the text (safetensors' error and DCP's, which wrap the OSError in their message)."""
    if error is None:
        return False
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
        return True
    return out_of_space(error.__cause__) or out_of_space(error.__context__)


def space_taken(folder: Path) -> int:
    """The disk space a folder's files take (their blocks, not their lengths)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def tensor_bytes(tree) -> int:
    """The bytes of every tensor in nested dicts and lists."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list | tuple) else []
    return sum(tensor_bytes(v) for v in values)


def load_optimizer_state(folder: Path, model, optimizer) -> None:
    """Restore the optimizer state saved by save_checkpoint, each process its own shard, unpickling
    nothing but DCP's metadata classes and plain data (PlainDataReader, PlainDataPlanner)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    from sps.training.plain_dcp import PlainDataPlanner, PlainDataReader

    if not (folder / "optimizer").is_dir():
        raise FileNotFoundError(f"checkpoint {folder} has no optimizer/ folder (an sps version before FSDP2 wrote it); start a new run")
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # the layout to load into
    try:
        with alone_is_intended():
            dcp.load(state, storage_reader=PlainDataReader(folder / "optimizer"), planner=PlainDataPlanner())
    except CheckpointException as e:  # a BaseException: wraps each process's error
        raise not_plain_data(folder, "optimizer/", e) from None
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


def not_plain_data(folder: Path, what: str, error: BaseException) -> ValueError:
    """The one-line refusal of a checkpoint that passed its manifest yet does not load."""
    failures = getattr(error, "failures", None)
    error = next(iter(failures.values()))[0] if failures else error  # DCP's CheckpointException wraps each process's
    reason = " ".join(str(error).split()).split("WeightsUnpickler error: ")[-1]  # torch's weights_only refusal buries it in advice
    return ValueError(f"checkpoint {folder}: {what} cannot be read as plain data ({type(error).__name__}: "
                      f"{reason.split('. ')[0][:200]}); sps did not write it whole: delete that checkpoint to resume from an older one")


@contextlib.contextmanager
def reading(folder: Path | None, what: str):
    """Turn a failure to load `what` from the checkpoint `folder` into one line (None: a fresh
    start, which reads nothing from a checkpoint, so its errors pass unchanged)."""
    try:
        yield
    except Exception as e:  # pickle's, torch's, safetensors' and peft's errors have many types
        if folder is None:
            raise
        raise not_plain_data(folder, what, e) from e


@contextlib.contextmanager
def alone_is_intended():
    """torch.distributed.checkpoint warns when there is no process group; a world of one has none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def load_trainer_state(folder: Path) -> dict:
    """The trainer state of a checkpoint: tensors and plain containers only (weights_only), so
    loading it cannot run code."""
    with reading(folder, "trainer_state.pt"):
        return torch.load(folder / "trainer_state.pt", weights_only=True)

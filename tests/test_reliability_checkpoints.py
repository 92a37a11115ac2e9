"""Checkpoints are data (issue 41): someone else's checkpoint runs no code when resumed, a full disk
mid-checkpoint is one line and loses nothing, a run whose checkpoints are all damaged is refused
unless --overwrite, and stale temporary files are cleared. Each case asserts the exit code, the
message, and what is on disk; the security cases also that the planted code did not run."""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from test_reliability import config_file, error_of, settings
from test_train import rows

from sps.cli import main
from sps.training.checkpoint import checkpoint_problem, write_manifest

pytestmark = pytest.mark.long  # trains tiny runs: the second stage of `make test`
PAGE = 4096


class Payload:
    """Pickles as a call of open(marker, "w"): unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def trained(tmp_path_factory, model, name: str, **changes) -> Path:
    """A finished 2-step run with its one checkpoint, step 2."""
    folder = tmp_path_factory.mktemp(name)
    assert main(["train", "--config", str(config_file(folder, "run", **settings(model, folder / "run", max_steps=2, **changes)))]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def flowrl_run(tmp_path_factory, random_llama):
    """FlowRL's run: its checkpoint also holds the log Z head."""
    return trained(tmp_path_factory, random_llama, "flowrl", loss_mode="flowrl", loss_type="grpo")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, random_llama):
    return trained(tmp_path_factory, random_llama, "lora", peft={"r": 4, "lora_alpha": 8.0, "target_modules": ["q_proj", "v_proj"]})


def copy_run(run_dir: Path, where: Path) -> Path:
    shutil.copytree(run_dir, where / "run")
    return where / "run"


def resume(run_dir: Path, max_steps: int = 3, *flags: str) -> int:
    """Rerun the run in run_dir with its own settings (config.yaml) to max_steps."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = config_file(run_dir.parent, "resume", **{**saved, "output_dir": str(run_dir), "max_steps": max_steps})
    return main(["train", "--config", str(config), *flags])


def torch_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def plant_in_shard(folder: Path, marker: Path) -> None:
    """Put the payload in the optimizer shard, as the first value DCP stores as bytes (a param
    group's setting), and shift the metadata's offsets to match."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    metadata = pickle.loads((folder / "optimizer" / ".metadata").read_bytes())  # the run's own, before planting
    shard = folder / "optimizer" / "__0_0.distcp"
    first_index, first = min(metadata.storage_data.items(), key=lambda item: item[1].offset)
    assert isinstance(metadata.state_dict_metadata[first_index.fqn], BytesStorageMetadata)
    payload = torch_pickle(Payload(marker))
    shard.write_bytes(payload + shard.read_bytes()[first.length:])
    for info in metadata.storage_data.values():
        info.offset += len(payload) - first.length if info is not first else 0
    first.length = len(payload)
    (folder / "optimizer" / ".metadata").write_bytes(pickle.dumps(metadata))


def plant(folder: Path, name: str, marker: Path) -> None:
    """Replace `name` in the checkpoint `folder` by a pickle that creates `marker` when unpickled,
    in the form its loader reads."""
    if name == "optimizer/__0_0.distcp":
        plant_in_shard(folder, marker)
    elif name.endswith(".bin"):  # in place of the safetensors file, which loaders prefer
        (folder / name.replace(".bin", ".safetensors").replace("pytorch_model", "model")).unlink()
        (folder / name).write_bytes(torch_pickle(Payload(marker)))
    elif name.endswith(".pt"):
        (folder / name).write_bytes(torch_pickle(Payload(marker)))
    else:
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))


# ---- someone else's checkpoint ------------------------------------------------------------------------

FLOWRL_FILES = ["model.safetensors", "pytorch_model.bin", "optimizer/.metadata", "optimizer/__0_0.distcp", "trainer_state.pt", "log_z_head.pt"]
LORA_FILES = ["adapter_model.safetensors", "adapter_model.bin"]


@pytest.mark.parametrize("manifest", ["rewritten", "removed"])
@pytest.mark.parametrize("name", FLOWRL_FILES + LORA_FILES)
def test_a_planted_pickle_is_refused_in_one_line_and_never_runs(request, tmp_path, capsys, name, manifest):
    source = request.getfixturevalue("lora_run" if name in LORA_FILES else "flowrl_run")
    run_dir = copy_run(source, tmp_path)
    folder = run_dir / "checkpoints" / "step_000002"
    marker = tmp_path / "marker"
    plant(folder, name, marker)
    if manifest == "rewritten":  # someone else's folder: its manifest agrees with its files
        write_manifest(folder)
    else:
        (folder / "manifest.json").unlink()
    capsys.readouterr()
    assert resume(run_dir) == 2
    message = error_of(capsys)
    assert not marker.exists()  # nothing was executed
    if manifest == "rewritten":
        assert f"checkpoint {folder}: " in message and "cannot be read as plain data" in message
    else:
        assert f"{run_dir} has no good checkpoint (step_000002: no manifest.json" in message and "--overwrite" in message
    assert [r["step"] for r in rows(run_dir)] == [1, 2]  # nothing run, nothing dropped
    assert folder.is_dir()


def test_a_file_the_manifest_does_not_list_is_refused(flowrl_run, tmp_path, capsys):
    run_dir = copy_run(flowrl_run, tmp_path)
    marker = tmp_path / "marker"
    (run_dir / "checkpoints" / "step_000002" / "pytorch_model.bin").write_bytes(torch_pickle(Payload(marker)))
    assert resume(run_dir) == 2
    assert "step_000002: it holds files its manifest does not list (pytorch_model.bin)" in error_of(capsys)
    assert not marker.exists()
    assert [r["step"] for r in rows(run_dir)] == [1, 2]


# ---- every checkpoint damaged ------------------------------------------------------------------------


def test_all_checkpoints_damaged_is_refused_naming_each_unless_overwrite(flowrl_run, tmp_path, capsys):
    run_dir = copy_run(flowrl_run, tmp_path)
    before = rows(run_dir)
    newest = run_dir / "checkpoints" / "step_000002"
    older = run_dir / "checkpoints" / "step_000001"
    shutil.copytree(newest, older)
    (older / "manifest.json").unlink()
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    capsys.readouterr()
    assert resume(run_dir) == 2
    message = error_of(capsys)
    assert "step_000002: model.safetensors has 1000 bytes, the manifest says" in message
    assert "step_000001: no manifest.json" in message and "rerun with --overwrite to delete the run there and start over" in message
    assert rows(run_dir) == before and older.is_dir() and weights.stat().st_size == 1000  # nothing touched
    assert resume(run_dir, 3, "--restart") == 0  # --overwrite's other name
    assert f"--overwrite: removed the run that was in {run_dir}, starting over" in capsys.readouterr().out
    redone = rows(run_dir)
    assert [r["step"] for r in redone] == [1, 2, 3]  # started over: each step once
    assert [r["reward"] for r in redone[:2]] == pytest.approx([r["reward"] for r in before])
    assert not older.exists() and checkpoint_problem(newest) is None  # a new step 2 in place of the damaged one


# ---- stale temporary files ------------------------------------------------------------------------------


def test_stale_single_file_temporaries_are_removed_and_reported(flowrl_run, tmp_path, capsys):
    run_dir = copy_run(flowrl_run, tmp_path)
    stale = [run_dir / ".config.yaml.k2j4_x.tmp", run_dir / "checkpoints" / ".x.abc.tmp", run_dir / "evals" / "step_000000" / ".samples.jsonl.q1.tmp"]
    kept = [run_dir / "notes.tmp", run_dir / ".notes", run_dir / "evals" / "step_000000" / "samples.jsonl"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    capsys.readouterr()
    assert resume(run_dir) == 0
    out = capsys.readouterr().out
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    for path in stale:
        assert f"removed {path.relative_to(run_dir)}, left by an interrupted write" in out
    assert [r["step"] for r in rows(run_dir)] == [1, 2, 3]


# ---- a full disk -------------------------------------------------------------------------------------------------


def pages(size: int) -> int:
    return -(-size // PAGE) * PAGE


@contextlib.contextmanager
def tmpfs(folder: Path, size: int):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: a failed run's traceback may still map a file there


def test_a_full_disk_mid_checkpoint_is_one_line_keeps_the_last_and_resumes(flowrl_run, tmp_path, capsys):
    whole = copy_run(flowrl_run, tmp_path)
    assert resume(whole, 4) == 0  # the uninterrupted run (a resumed run repeats it exactly)
    expected = rows(whole)
    used = sum(pages(p.stat().st_size) for p in flowrl_run.rglob("*") if p.is_file())
    checkpoint = flowrl_run / "checkpoints" / "step_000002"
    # Step 4's checkpoint writes these files in this order (as step 2's, of the same sizes): the
    # disk fills in the middle of each target, so the error comes from DCP's shard writer,
    # safetensors, or the plain writes of the rest (json, tokenizer, torch.save's bytes).
    order = ["optimizer/__0_0.distcp", "optimizer/.metadata", "model.safetensors", "config.json", "generation_config.json",
             "log_z_head.pt", "tokenizer.json", "tokenizer_config.json", "trainer_state.pt"]
    before = {name: sum(pages((checkpoint / n).stat().st_size) for n in order[:i]) for i, name in enumerate(order)}
    for name in ["optimizer/__0_0.distcp", "optimizer/.metadata", "model.safetensors", "log_z_head.pt", "tokenizer.json", "trainer_state.pt"]:
        room = used + 2 * PAGE + before[name] + pages((checkpoint / name).stat().st_size) // 2  # 2 pages: the log's growth
        with tmpfs(tmp_path / f"disk_{Path(name).name}", room) as disk:
            run_dir = copy_run(flowrl_run, disk)
            capsys.readouterr()
            assert resume(run_dir, 4) == 2, name
            message = error_of(capsys)
            assert f"no space left on the device holding {run_dir / 'checkpoints'} for checkpoint step_000004" in message, name
            assert "it needs about 0.5" in message and "MB are free; step_000002 is kept" in message
            assert checkpoint_problem(run_dir / "checkpoints" / "step_000002") is None
            assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_000002"]  # no temporary folder left
            subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
            assert resume(run_dir, 4) == 0
            resumed = rows(run_dir)
            assert [r["step"] for r in resumed] == [1, 2, 3, 4]
            assert [r["reward"] for r in resumed] == pytest.approx([r["reward"] for r in expected])

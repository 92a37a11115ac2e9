"""`sps export`: a run's checkpoint as a plain Hugging Face folder that from_pretrained and vLLM load."""

from __future__ import annotations

from pathlib import Path


def export_checkpoint(run_dir: Path, out: Path, step: int | None, merge: bool, dtype: str = "float32") -> Path:
    """Write the checkpoint of `step` (default: the newest) of run_dir (or run_dir itself when it is a
    checkpoint folder) into `out`: the weights and tokenizer, the LoRA adapters merged into the base
    when the run trained adapters (which needs merge). Returns `out`."""
    from sps.io import atomic_dir
    from sps.models.loading import load_policy, load_tokenizer
    from sps.models.lora import is_adapter_folder
    from sps.training.checkpoint import checkpoint_dir, list_checkpoints

    found = list_checkpoints(run_dir)
    if step is not None:
        folder = checkpoint_dir(run_dir, step)
        if not folder.is_dir():
            raise FileNotFoundError(f"{run_dir} has no checkpoint of step {step}; it has steps {[s for s, _ in found] or 'none'}")
    elif found:
        folder = found[-1][1]
    elif (run_dir / "config.json").is_file() or is_adapter_folder(run_dir):
        folder = run_dir
    else:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint (checkpoints/step_*); is it a run folder of sps train?")
    if is_adapter_folder(folder) and not merge:
        raise ValueError(f"{folder} holds LoRA adapters, not a whole model: add --merge to fold them into the base weights")
    model, _ = load_policy(str(folder), dtype=dtype, device="cpu")  # an adapter folder loads merged
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        load_tokenizer(str(folder)).save_pretrained(tmp)
    return out

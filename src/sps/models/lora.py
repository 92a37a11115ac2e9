"""LoRA adapters through the `peft` library: the policy trains low-rank adapters on a frozen base.

The base keeps its weights (in the compute dtype: nothing updates them, so no fp32 master copy is
needed) and only the adapters, kept in float32, have gradients and AdamW state. The KL and DPH
reference is the same model with its adapters switched off: no second copy. Checkpoints hold the
adapter (peft's `adapter_model.safetensors` and `adapter_config.json`) beside the trainer state;
`merged_weights` gives the base with the adapters folded in, without touching the model, for an
engine with its own weights (vLLM); `sps export --merge` folds them in with peft's merge_and_unload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def add_adapters(model, r: int, alpha: float, dropout: float, target_modules: list[str]):
    """The model wrapped by peft with fresh LoRA adapters (float32) on `target_modules` (empty: peft's
    default for the architecture); only the adapters require gradients."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or None, task_type="CAUSAL_LM")
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def load_adapters(model, folder: str | Path):
    """The model wrapped by peft with the trainable adapters saved in `folder`."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=True, autocast_adapter_dtype=True)


def has_adapters(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def base_model(model):
    """The Hugging Face model under peft's wrappers (the model itself when it has no adapters)."""
    return model.get_base_model() if has_adapters(model) else model


def adapter_state(model, full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter's tensors out of the model's full state dict, named as peft saves them."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=full_state)


def merged_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the base model's weights with every LoRA delta added, named as the base
    model's own state dict (what from_pretrained and vLLM load). The model is not changed."""
    from peft.tuners.lora import LoraLayer

    base = base_model(model)
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            deltas[f"{name}.weight"] = delta
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        plain = name.replace(".base_layer.", ".")
        tensor = tensor.detach()
        if plain in deltas:
            tensor = (tensor.float() + deltas[plain].float()).to(tensor.dtype)
        yield plain, tensor


def merged_adapter_model(folder: str | Path, dtype: torch.dtype):
    """A plain Hugging Face model: the base named in an adapter folder's adapter_config.json with
    the folder's adapters merged in (peft's merge_and_unload)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()

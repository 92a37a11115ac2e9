"""Peak GPU memory of one training process, estimated from the model's shape alone.

A first-order model, to be calibrated against measurement (bench/gpu_check.py prints both):

  persistent  weights P*b, AdamW's two moments 2*P*b (kept in the parameters' dtype), a frozen
              reference model P*b when beta > 0; each divided by the processes when sharded.
  training    gradients P*b (sharded like the weights), the activations autograd keeps for one
              micro-batch of m sequences of L tokens: per token and layer about 7h + 2kv + 4I
              values (residual stream, norms, q/k/v, attention output, the SwiGLU MLP's four
              I-wide tensors) with a fused attention kernel that stores no L x L scores, and the
              completion logits m * T * V: the model-dtype logits plus three float32 tensors (the
              cast, the temperature-scaled copy and the log-softmax that backward keeps).
  rollouts    the HF engine's KV cache, B sequences * L tokens * layers * 2 * kv * b, and the
              float32 next-token logits B * V * 4; vLLM instead reserves its share of the GPU.
Peak = persistent + the larger of training and rollouts (the HF engine), or persistent + vLLM's
share + training (vLLM stays resident). No gradient checkpointing: the trainer has none.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FP32 = 4


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a transformers config."""

    params: int
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int  # num_key_value_heads * head_dim
    vocab: int
    context: int  # max_position_embeddings


def shape_of(config, params: int) -> ModelShape:
    """A ModelShape from a transformers config (Llama/Qwen2 names) and a parameter count."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return ModelShape(
        params=params,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        layers=config.num_hidden_layers,
        kv_dim=kv_heads * head_dim,
        vocab=config.vocab_size,
        context=config.max_position_embeddings,
    )


def count_parameters(config) -> int:
    """Parameters of the model a config describes, counted on the meta device (no memory, no weights)."""
    return _count_parameters(config.to_json_string())


@functools.lru_cache(maxsize=8)
def _count_parameters(config_json: str) -> int:
    """Cached by the config's text: building a 7B model even on the meta device takes seconds."""
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = json.loads(config_json)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Layout:
    """How a run is spread over processes (one GPU each)."""

    processes: int = 1
    shard_params: bool = False  # weights and gradients split over the processes (FSDP full shard)
    shard_optimizer: bool = False  # AdamW state split over the processes (ZeRO-1/2, FSDP)


# Each LoRA target's (input, output) width by its Llama / Qwen2 module name.
LORA_SHAPES = {
    "q_proj": lambda s: (s.hidden, s.hidden), "k_proj": lambda s: (s.hidden, s.kv_dim), "v_proj": lambda s: (s.hidden, s.kv_dim),
    "o_proj": lambda s: (s.hidden, s.hidden), "gate_proj": lambda s: (s.hidden, s.intermediate),
    "up_proj": lambda s: (s.hidden, s.intermediate), "down_proj": lambda s: (s.intermediate, s.hidden),
}
PEFT_DEFAULT_TARGETS = ["q_proj", "v_proj"]  # peft's default for Llama and Qwen2


def lora_parameters(shape: ModelShape, r: int, targets: list[str]) -> int:
    """Parameters of rank-r LoRA adapters on the named modules of every layer: r (in + out) each."""
    unknown = [t for t in targets if t not in LORA_SHAPES]
    if unknown:
        raise ValueError(f"peft.target_modules: the memory estimate knows {', '.join(LORA_SHAPES)}, not {', '.join(unknown)}")
    return shape.layers * sum(r * sum(LORA_SHAPES[t](shape)) for t in targets or PEFT_DEFAULT_TARGETS)


def training_memory(
    shape: ModelShape, dtype: str, micro_batch: int, prompt_tokens: int, completion_tokens: int,
    layout: Layout = Layout(), reference: bool = False, chunk_logits: bool = True, chunk_size: int = 0,
    adapter_params: int = 0,
) -> dict[str, float]:
    """Bytes of each part of one process's training-time memory (see the module docstring). dtype is
    what the model computes in; the weights, gradients and AdamW's moments are float32 whatever it
    is (mixed precision keeps an fp32 master copy). chunk_logits: log-probs through the LM head a
    chunk of chunk_size tokens at a time (0: automatic), else from the whole logits. adapter_params
    > 0: LoRA, a frozen base in the compute dtype, gradients and AdamW's state for the adapters only
    (in float32), and no reference copy (it is the base with the adapters off)."""
    from sps.algorithms.lm_head import chunk_tokens

    c = DTYPE_BYTES[dtype]
    p = layout.processes
    sharded = p if layout.shard_params else 1
    trained = adapter_params or shape.params
    full_weights = shape.params * c + adapter_params * FP32 if adapter_params else shape.params * FP32
    weights = full_weights / sharded
    optimizer = 2 * trained * FP32 / (p if layout.shard_params or layout.shard_optimizer else 1)
    tokens = micro_batch * (prompt_tokens + completion_tokens)
    per_token_layer = 7 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate
    head = shape.vocab * shape.hidden
    head_grad = 0 if adapter_params else head * FP32  # a frozen head needs no weight gradient
    if chunk_logits:
        # Per chunk: two float32 buffers (sps.algorithms.lm_head works in place) and, under mixed
        # precision, the gradient in the compute dtype; once: the head's gradient accumulated in
        # float32, and the head cast to the compute dtype under mixed precision.
        chunk = min(micro_batch * completion_tokens, chunk_tokens(chunk_size, shape.vocab))
        mixed = c != FP32
        logits = chunk * shape.vocab * (2 * FP32 + (c if mixed else 0)) + head_grad + (head * c if mixed and not adapter_params else 0)
    else:
        # The model's logits, and the log-softmax backward keeps (measured in float32: 8 bytes a logit),
        # plus the float32 cast under mixed precision.
        logits = micro_batch * (completion_tokens + 1) * shape.vocab * (c + FP32 + (FP32 if c != FP32 else 0))
    return {
        "weights": weights,
        "optimizer": optimizer,
        "reference": shape.params * c if reference and not adapter_params else 0.0,
        "gradients": trained * FP32 / sharded,
        # Mixed precision: the weights cast to the compute dtype for the forward, which backward keeps.
        "compute_weights": shape.params * c / sharded if c != FP32 and not adapter_params else 0.0,
        # Sharded runs gather the full weights on every process for sampling and scoring
        # (sps.training.distributed.gather_full_weights); training holds only the shard.
        "gathered_weights": full_weights - weights,
        "activations": float(tokens * shape.layers * per_token_layer * c),
        "logits": float(logits),
    }


def rollout_memory(shape: ModelShape, dtype: str, sequences: int, prompt_tokens: int, completion_tokens: int) -> dict[str, float]:
    """Bytes of the HF engine's sampling state for `sequences` sequences decoded together."""
    b = DTYPE_BYTES[dtype]
    return {
        "kv_cache": float(sequences * (prompt_tokens + completion_tokens) * shape.layers * 2 * shape.kv_dim * b),
        "sampling_logits": float(sequences * shape.vocab * 4),
    }


def peak_memory(train: dict[str, float], rollout: dict[str, float] | None, vllm_reserve: float = 0.0) -> float:
    """Peak bytes per process: persistent + max(training, HF rollouts), or + vLLM's reserve + training."""
    persistent = train["weights"] + train["optimizer"] + train["reference"]
    training = train["gradients"] + train.get("compute_weights", 0.0) + train["activations"] + train["logits"]
    sampling = (sum(rollout.values()) if rollout else 0.0) + train.get("gathered_weights", 0.0)
    return persistent + vllm_reserve + max(training, sampling)


def parse_size(text: str) -> float:
    """'80GB', '80 GiB', '141g', '80' (GiB) -> bytes. GB and GiB are both read as GiB, as GPUs are sold."""
    cleaned = text.strip().lower().replace(" ", "")
    for suffix in ("gib", "gb", "g"):
        if cleaned.endswith(suffix):
            cleaned = cleaned[: -len(suffix)]
            break
    try:
        value = float(cleaned)
    except ValueError:
        raise ValueError(f"--gpu-memory {text!r} is not a size such as 80GB") from None
    if value <= 0:
        raise ValueError(f"--gpu-memory {text!r} must be positive")
    return value * GIB

"""The prompt side of sampling: each distinct prompt is prefilled once and its KV cache kept once
for all its samples (`SharedPrefix`, whose attention `shared_prefix_attention` reads the prompt
once per prompt), or copied to every sample for models whose attention cannot be swapped
(`CopiedPrefix`); the completions' cache sits in buffers sized for the whole generation
(`PreallocatedLayer`). Used by sps.rollout.hf; `mask_positions` and `cache_argument` also by the
training forward (sps.training.batch).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import AttentionMaskInterface

PREFILL_CALL_COST = 256  # a prefill call's fixed cost, in prompt positions (see prefill_buckets)


def cache_argument(model) -> str:
    """The forward's name for the KV cache: transformers renamed `past_key_values` to `cache` during 5.x.
    A peft wrapper passes its keywords on to the model it wraps, whose forward names it."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids of a left-padded (B, L) attention mask: 0 at each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)



class PreallocatedLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values sit in buffers sized for the whole generation.

    DynamicLayer concatenates at every step, copying the whole cache each time (O(T^2) copying over
    a completion, a tenth of a decode step on a CPU); here a step writes its own positions and
    attention reads a view of the filled part.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.device = key_states.device
            self.key_buffer = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[-1]))
            self.value_buffer = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[-1]))
            self.is_initialized = True
        end = self.length + key_states.shape[-2]
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:  # nothing written yet: rows finished at their first token
            return
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """The model's DynamicCache with its full-attention layers preallocated (sliding-window ones kept)."""
    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def prefill_buckets(lengths: list[int], call_cost: int = PREFILL_CALL_COST) -> list[list[int]]:
    """Group prompts (by index) for prefill calls, each left-padded to its longest prompt.

    One call pads every prompt to the longest (a third more positions for chat prompts of mixed
    lengths); one call per prompt pays the forward's fixed cost per prompt (more than the whole
    prefill of the testbed). Splits the prompts, sorted by length, where the total of computed
    positions plus call_cost per call is least (dynamic programming over the split points).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    best, split = [0] + [None] * len(order), [0] * (len(order) + 1)  # best[j]: the first j prompts
    for j in range(1, len(order) + 1):
        best[j], split[j] = min((best[i] + (j - i) * sorted_lengths[j - 1] + call_cost, i) for i in range(j))
    buckets, j = [], len(order)
    while j:
        buckets.append(order[split[j] : j])
        j = split[j]
    return buckets[::-1]


def prefill_prompts(model, prompts: list[list[int]], cache: DynamicCache, cache_kwarg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the prompts, left-padded, through the model into `cache`. Returns their (P, L) attention
    mask and the logits at each prompt's last token, (P, V)."""
    input_ids, mask = left_pad(prompts, 0, model.device)  # padding is masked, so its id does not matter
    out = model(input_ids=input_ids, attention_mask=None if mask.all() else mask, position_ids=mask_positions(mask),
                use_cache=True, logits_to_keep=1, **{cache_kwarg: cache})
    return mask, out.logits[:, -1].float()


class SharedPrefix:
    """The prompts' KV cache, kept once per prompt while its samples decode, and which row reads which.

    Prompts are prefilled in groups of similar length (prefill_buckets), and each prompt's cache is
    kept once: copying it to each of its n samples would make every decode step read the prompt n
    times (a fifth of a SmolLM2 decode step) and hold n copies in memory. The samples of a prompt are gathered into one group, so
    attention over the prompt is one matmul per prompt (shared_prefix_attention).
    Builds `cache`, the empty decode cache of the completions, and `last_logits` (P, V).
    """

    attention = "sps_shared_prefix"

    def __init__(self, model, prompts: list[list[int]], row_prompt: torch.Tensor, cache_kwarg: str, max_new_tokens: int):
        width, device = max(len(ids) for ids in prompts), model.device
        self.bias = torch.full((len(prompts), width), float("-inf"), device=device)  # (P, L): 0 at real tokens
        last_logits = [None] * len(prompts)
        keys = values = None
        for bucket in prefill_buckets([len(ids) for ids in prompts]):
            prefill = DynamicCache(config=model.config)
            mask, logits = prefill_prompts(model, [prompts[i] for i in bucket], prefill, cache_kwarg)
            if keys is None:  # per layer (P, kv_heads, L, head_dim), prompts right-aligned
                keys = [layer.keys.new_zeros((len(prompts), layer.keys.shape[1], width, layer.keys.shape[-1])) for layer in prefill.layers]
                # Under autocast the keys (past a float32 rotary embedding) and values can differ in dtype.
                values = [layer.values.new_zeros(k.shape) for layer, k in zip(prefill.layers, keys, strict=True)]
            rows, start = torch.tensor(bucket, device=device), width - mask.shape[1]
            for layer, layer_keys, layer_values in zip(prefill.layers, keys, values):
                layer_keys[rows, :, start:] = layer.keys
                layer_values[rows, :, start:] = layer.values
            self.bias[rows, start:] = torch.where(mask.bool(), 0.0, float("-inf"))
            for i, row_logits in zip(bucket, logits):
                last_logits[i] = row_logits
        self.keys, self.values = keys, values
        self.last_logits = torch.stack(last_logits)
        self.cache = preallocated_cache(model.config, max_new_tokens)
        self.select(None, row_prompt)

    def select(self, keep: torch.Tensor | None, row_prompt: torch.Tensor) -> None:
        """Set the batch's rows: row_prompt (B,) is each row's prompt, non-decreasing down the batch."""
        counts = torch.bincount(row_prompt, minlength=self.bias.shape[0])
        self.group_size = int(counts.max())
        first = counts.cumsum(0) - counts  # the first row of each prompt's group
        offset = torch.arange(len(row_prompt), device=row_prompt.device) - first[row_prompt]
        self.slot = row_prompt * self.group_size + offset  # (B,) each row's place in the (P, G) groups

    def step_kwargs(self) -> dict:
        """The model's keyword arguments for the next decode step."""
        return {"shared_prefix": self, "attention_mask": None}


class CopiedPrefix:
    """The fallback for models whose attention cannot be swapped: the prompts are prefilled together,
    left-padded, and every row gets its own copy of its prompt's cache in the decode cache, with an
    attention mask that grows with the completion. Same attributes as SharedPrefix."""

    attention = None  # the model's own

    def __init__(self, model, prompts: list[list[int]], row_prompt: torch.Tensor, cache_kwarg: str, max_new_tokens: int):
        self.cache = preallocated_cache(model.config, max(len(ids) for ids in prompts) + max_new_tokens)
        mask, self.last_logits = prefill_prompts(model, prompts, self.cache, cache_kwarg)
        self.padded = not bool(mask.all())
        self.cache.batch_select_indices(row_prompt)
        self.mask = mask[row_prompt]

    def select(self, keep: torch.Tensor, row_prompt: torch.Tensor) -> None:
        self.mask = self.mask[keep]

    def step_kwargs(self) -> dict:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=-1)
        return {"attention_mask": self.mask if self.padded else None}


def shared_prefix_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, shared_prefix=None, **kwargs):
    """One decode step's attention over each row's prompt (read once per prompt) and its own completion.

    query: (B, H, 1, D); key, value: (B, H_kv, T, D), the completion so far with this step's token
    (every row in the batch has decoded the same number of tokens, so nothing is masked there).
    The two parts are softmaxed jointly by merging their log-sum-exps. Returns ((B, 1, H, D), None).
    """
    prefix: SharedPrefix = shared_prefix
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    per_kv = heads // kv_heads
    prompts, group = prefix.bias.shape[0], prefix.group_size
    q = query[:, :, 0].reshape(rows, kv_heads, per_kv, dim)

    def to_groups(x):  # (B, H_kv, per_kv, k) -> (P, H_kv, G * per_kv, k)
        grouped = x.new_zeros((prompts * group, *x.shape[1:]))
        grouped[prefix.slot] = x
        return grouped.view(prompts, group, kv_heads, per_kv, -1).transpose(1, 2).reshape(prompts, kv_heads, group * per_kv, -1)

    def to_rows(x):  # the inverse of to_groups
        return x.view(prompts, kv_heads, group, per_kv, -1).transpose(1, 2).reshape(prompts * group, kv_heads, per_kv, -1)[prefix.slot]

    layer = module.layer_idx
    prompt_scores = (to_groups(q) @ prefix.keys[layer].transpose(-1, -2)).float() * scaling + prefix.bias[:, None, None, :]
    prompt_max = prompt_scores.amax(-1, keepdim=True)
    prompt_weights = (prompt_scores - prompt_max).exp()
    prompt_out = to_rows((prompt_weights.to(value.dtype) @ prefix.values[layer]).float())
    prompt_sum, prompt_max = to_rows(prompt_weights.sum(-1, keepdim=True)), to_rows(prompt_max)

    own_scores = (q @ key.transpose(-1, -2)).float() * scaling  # (B, H_kv, per_kv, T)
    own_max = own_scores.amax(-1, keepdim=True)
    own_weights = (own_scores - own_max).exp()
    own_out = (own_weights.to(value.dtype) @ value).float()

    top = torch.maximum(prompt_max, own_max)
    prompt_scale, own_scale = (prompt_max - top).exp(), (own_max - top).exp()
    total = prompt_sum * prompt_scale + own_weights.sum(-1, keepdim=True) * own_scale
    out = (prompt_out * prompt_scale + own_out * own_scale) / total
    return out.to(query.dtype).reshape(rows, 1, heads, dim), None


AttentionInterface.register(SharedPrefix.attention, shared_prefix_attention)
AttentionMaskInterface.register(SharedPrefix.attention, lambda *args, **kwargs: None)  # shared_prefix_attention masks itself


def supports_shared_prefix(model) -> bool:
    """Whether the model's attention can be swapped for shared_prefix_attention: it dispatches through
    transformers' attention interface and every layer attends to the whole context (no sliding window)."""
    layers = DynamicCache(config=model.config).layers
    return bool(getattr(model, "_supports_attention_backend", False)) and all(type(layer) is DynamicLayer for layer in layers)


@contextmanager
def attention_implementation(model, name: str | None):
    """Run the model's attention layers with the named implementation (None: as they are), restoring the old one after."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = name or previous
    try:
        yield
    finally:
        model.config._attn_implementation = previous




def left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (B, T) ids and a (B, T) attention mask (1 = real token)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)

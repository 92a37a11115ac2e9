"""A lean KV-cache sampling loop over any Hugging Face causal LM.

Why not `model.generate`: on small models the per-token overhead of `generate` (logits processors,
stopping criteria, finished rows that keep being computed) dominates. This loop prefills each
distinct prompt once and keeps its KV cache once for its `n` samples (their attention reads it
through `shared_prefix_attention`), writes the completions' cache into buffers sized for the whole
generation, drops finished rows from the batch as they accumulate, and records the log-probability
of every sampled token, which the RL update needs as the "old" policy's log-probs.
`bench/rollout_throughput.py` measures it against `generate`.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import AttentionMaskInterface

from sps.rollout.base import Completion, SamplingParams

# Compact the batch once this fraction of its rows has finished: each compaction copies the
# KV cache, so doing it every step would cost more than it saves.
COMPACT_FRACTION = 0.25
MULTINOMIAL_MAX_VOCAB = 4096  # see sample()
PREFILL_CALL_COST = 256  # a prefill call's fixed cost, in prompt positions (see prefill_buckets)


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    if not ids:
        raise ValueError("the tokenizer and the model's generation config name no EOS token; sampling would never stop")
    return ids


def cache_argument(model) -> str:
    """The forward's name for the KV cache: transformers renamed `past_key_values` to `cache` during 5.x."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids of a left-padded (B, L) attention mask: 0 at each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k tokens and outside the top-p nucleus with -inf.

    logits: (B, V), already divided by the temperature. Returns a new (B, V) tensor.
    The most likely token always survives, so no row is left with nothing to sample.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it already reaches top_p.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token id per row of probs (B, V). Returns (B,).

    torch.multinomial draws an exponential random number per vocabulary entry, which costs 40 ns
    each on a CPU: 15% of a SmolLM2 decode step at 128 rows over its 49k vocabulary. Above
    MULTINOMIAL_MAX_VOCAB entries the same exponential race (the argmax of p / E, E ~ Exp(1)) is run
    on uniform numbers, a fifth of the cost; small vocabularies (the testbed) keep
    torch.multinomial, whose seeded samples the recorded testbed results come from.
    """
    if probs.shape[-1] <= MULTINOMIAL_MAX_VOCAB:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    exponentials = torch.empty_like(probs).uniform_(generator=generator).log_().neg_()
    return (probs / exponentials).argmax(-1)


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
                values = [torch.zeros_like(k) for k in keys]
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


class HFEngine:
    """Samples from a Hugging Face causal LM with the model's own forward and a DynamicCache.

    batch_size: the most sequences decoded together (prompts x samples); lower it if memory is short.
    """

    def __init__(self, model, tokenizer, batch_size: int = 256):
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before sampling")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.cache_kwarg = cache_argument(model)
        self.shares_prefix = supports_shared_prefix(model)

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams, seed: int | None = None
    ) -> list[list[Completion]]:
        """Sample n completions for each prompt. Returns one list of n Completions per prompt."""
        if n < 1:
            raise ValueError(f"n must be >= 1 (got {n})")
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        generator = torch.Generator(device=self.model.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        rows = [(p, s) for p in range(len(prompt_ids)) for s in range(n)]
        results: list[list[Completion | None]] = [[None] * n for _ in prompt_ids]
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for (p, s), completion in zip(chunk, self._sample_chunk(prompt_ids, chunk, params, generator)):
                    results[p][s] = completion
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _sample_chunk(self, prompt_ids, chunk, params: SamplingParams, generator) -> list[Completion]:
        device = self.model.device
        distinct = sorted({p for p, _ in chunk})
        slot = {p: i for i, p in enumerate(distinct)}
        row_of = torch.tensor([slot[p] for p, _ in chunk], device=device)
        # Prefill each distinct prompt once. Its samples then read that cache through
        # shared_prefix_attention where the model allows, else each gets its own copy.
        prefix = (SharedPrefix if self.shares_prefix else CopiedPrefix)(
            self.model, [prompt_ids[p] for p in distinct], row_of, self.cache_kwarg, params.max_new_tokens
        )
        cache, logits = prefix.cache, prefix.last_logits[row_of]
        next_position = torch.tensor([[len(prompt_ids[p])] for p, _ in chunk], device=device)

        rows = len(chunk)
        tokens = torch.full((rows, params.max_new_tokens), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((rows, params.max_new_tokens), device=device)
        entropies = torch.zeros((rows, params.max_new_tokens), device=device)
        lengths = torch.zeros(rows, dtype=torch.long, device=device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=device)
        alive = torch.arange(rows, device=device)  # the original row of each row still in the batch
        eos = torch.tensor(sorted(self.eos_ids), device=device)

        with attention_implementation(self.model, prefix.attention):
            for t in range(params.max_new_tokens):
                scaled = logits / params.temperature
                probs = filter_logits(scaled, params.top_k, params.top_p).softmax(-1)
                sampled = sample(probs, generator)
                live = ~stopped[alive]  # rows that finished since the last compaction sample nothing
                target = alive[live]
                tokens[target, t] = sampled[live]
                log_dist = scaled.log_softmax(-1)
                logprobs[target, t] = log_dist.gather(-1, sampled[:, None]).squeeze(-1)[live]
                entropies[target, t] = -(log_dist.exp() * log_dist).sum(-1)[live]
                lengths[target] += 1
                stopped[target[torch.isin(sampled[live], eos)]] = True
                finished = stopped[alive]
                done = int(finished.sum())  # the step's one host sync
                if t + 1 == params.max_new_tokens or done == len(alive):
                    break
                if done >= COMPACT_FRACTION * len(alive):
                    keep = (~finished).nonzero().squeeze(-1)
                    cache.batch_select_indices(keep)
                    alive, sampled, next_position = alive[keep], sampled[keep], next_position[keep]
                    prefix.select(keep, row_of[alive])
                out = self.model(
                    input_ids=sampled[:, None],
                    position_ids=next_position,
                    use_cache=True,
                    **prefix.step_kwargs(),
                    **{self.cache_kwarg: cache},
                )
                logits = out.logits[:, -1].float()
                next_position = next_position + 1

        tokens, logprobs, entropies = tokens.cpu(), logprobs.cpu(), entropies.cpu()
        lengths, stopped = lengths.cpu(), stopped.cpu()
        completions = []
        for r in range(rows):
            length = int(lengths[r])
            ids = tokens[r, :length].tolist()
            completions.append(
                Completion(
                    token_ids=ids,
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=logprobs[r, :length].tolist(),
                    finish_reason="stop" if bool(stopped[r]) else "length",
                    entropies=entropies[r, :length].tolist(),
                )
            )
        return completions


def left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (B, T) ids and a (B, T) attention mask (1 = real token)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)

"""A lean KV-cache sampling loop over any Hugging Face causal LM.

Why not `model.generate`: on small models the per-token overhead of `generate` (logits processors,
stopping criteria, finished rows that keep being computed) dominates. This loop prefills each
distinct prompt once and copies its cache to its `n` samples, writes the cache into buffers sized
for the whole generation, drops finished rows from the batch as they accumulate, and records the
log-probability of every sampled token, which the RL update needs as the "old" policy's log-probs.
`bench/rollout_throughput.py` measures it against `generate`.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from sps.rollout.base import Completion, SamplingParams

# Compact the batch once this fraction of its rows has finished: each compaction copies the
# KV cache, so doing it every step would cost more than it saves.
COMPACT_FRACTION = 0.25


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
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """The model's DynamicCache with its full-attention layers preallocated (sliding-window ones kept)."""
    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


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
        input_ids, mask = left_pad([prompt_ids[p] for p in distinct], self.tokenizer.pad_token_id, device)
        padded = not bool(mask.all())
        positions = mask_positions(mask)

        # Prefill each distinct prompt once, then give every sample its own copy of the cache.
        cache = preallocated_cache(self.model.config, input_ids.shape[1] + params.max_new_tokens)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask if padded else None,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: cache},
        )
        row_of = torch.tensor([slot[p] for p, _ in chunk], device=device)
        logits = out.logits[:, -1].float()[row_of]
        cache.batch_select_indices(row_of)
        mask = mask[row_of]
        next_position = positions[row_of, -1:] + 1

        rows = len(chunk)
        tokens = torch.full((rows, params.max_new_tokens), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((rows, params.max_new_tokens), device=device)
        entropies = torch.zeros((rows, params.max_new_tokens), device=device)
        lengths = torch.zeros(rows, dtype=torch.long, device=device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=device)
        alive = torch.arange(rows, device=device)  # the original row of each row still in the batch
        eos = torch.tensor(sorted(self.eos_ids), device=device)

        for t in range(params.max_new_tokens):
            scaled = logits / params.temperature
            probs = filter_logits(scaled, params.top_k, params.top_p).softmax(-1)
            sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
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
                alive, sampled, mask, next_position = alive[keep], sampled[keep], mask[keep], next_position[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            out = self.model(
                input_ids=sampled[:, None],
                attention_mask=mask if padded else None,
                position_ids=next_position,
                use_cache=True,
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

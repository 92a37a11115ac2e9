"""A lean KV-cache sampling loop over any Hugging Face causal LM.

Why not `model.generate`: on small models the per-token overhead of `generate` (logits processors,
stopping criteria, finished rows that keep being computed) dominates. This loop prefills each
distinct prompt once and keeps its KV cache once for its `n` samples (their attention reads it
through `sps.rollout.prefix_cache`), writes the completions' cache into buffers sized for the whole
generation, drops finished rows from the batch as they accumulate, and records the log-probability
of every sampled token, which the RL update needs as the "old" policy's log-probs.
`bench/rollout_throughput.py` measures it against `generate`.
"""

from __future__ import annotations

import torch

from sps.rollout.base import Completion, SamplingParams
from sps.rollout.prefix_cache import (
    CopiedPrefix,
    SharedPrefix,
    attention_implementation,
    cache_argument,
    supports_shared_prefix,
)

# Compact the batch once this fraction of its rows has finished: each compaction copies the
# KV cache, so doing it every step would cost more than it saves.
COMPACT_FRACTION = 0.25
MULTINOMIAL_MAX_VOCAB = 4096  # see sample()


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

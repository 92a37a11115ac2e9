"""A step's rollouts as tensors, and the policy's log-probs of them.

Row b of a batch is completion b % G of prompt b // G (P prompts, G completions each, B = P * G).
Prompts are left-padded to a common length Lp and completions right-padded to T, so every
completion starts at column Lp and `input_ids` is (B, Lp + T).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from sps.algorithms.lm_head import chunk_tokens, head_logprobs
from sps.rollout.base import Completion
from sps.rollout.prefix_cache import cache_argument, mask_positions


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # (B, Lp + T)
    attention_mask: torch.Tensor  # (B, Lp + T)
    completion_ids: torch.Tensor  # (B, T)
    completion_mask: torch.Tensor  # (B, T) 1 on real completion tokens
    old_logps: torch.Tensor  # (B, T) log-probs under the rollout policy, 0 on padding
    truncated: torch.Tensor  # (B,) bool: cut off at max_completion_length
    texts: list[str]  # B decoded completions
    entropies: torch.Tensor | None  # (B, T) sampling entropies when the engine reports them

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1] - self.completion_ids.shape[1]

    def rows(self, index: torch.Tensor) -> RolloutBatch:
        """The sub-batch of the given rows, its padding cut to its own longest completion."""
        width = max(1, int(self.completion_mask[index].sum(-1).max())) if len(index) else 1
        end = self.prompt_length + width
        return RolloutBatch(
            input_ids=self.input_ids[index, :end],
            attention_mask=self.attention_mask[index, :end],
            completion_ids=self.completion_ids[index, :width],
            completion_mask=self.completion_mask[index, :width],
            old_logps=self.old_logps[index, :width],
            truncated=self.truncated[index],
            texts=[self.texts[i] for i in index.tolist()],
            entropies=None if self.entropies is None else self.entropies[index, :width],
        )


def collate(prompt_ids: list[list[int]], groups: list[list[Completion]], pad_id: int) -> RolloutBatch:
    """Stack P prompts and their G completions each (row b: prompt b // G) into a RolloutBatch."""
    rows = [(prompt, c) for prompt, group in zip(prompt_ids, groups, strict=True) for c in group]
    return collate_rows([p for p, _ in rows], [c for _, c in rows], pad_id)


def collate_rows(prompts: list[list[int]], completions: list[Completion], pad_id: int) -> RolloutBatch:
    """Stack (prompt, completion) rows into a RolloutBatch."""
    prompt_len = max(len(p) for p in prompts)
    width = max(1, max(len(c.token_ids) for c in completions))
    rows = len(completions)
    input_ids = torch.full((rows, prompt_len + width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, prompt_len + width), dtype=torch.long)
    old_logps = torch.zeros((rows, width))
    has_entropy = all(c.entropies is not None for c in completions)
    entropies = torch.zeros((rows, width)) if has_entropy else None
    for b, (prompt, c) in enumerate(zip(prompts, completions, strict=True)):
        n = len(c.token_ids)
        input_ids[b, prompt_len - len(prompt) : prompt_len] = torch.tensor(prompt)
        input_ids[b, prompt_len : prompt_len + n] = torch.tensor(c.token_ids, dtype=torch.long)
        attention[b, prompt_len - len(prompt) : prompt_len + n] = 1
        old_logps[b, :n] = torch.tensor(c.logprobs)
        if entropies is not None:
            entropies[b, :n] = torch.tensor(c.entropies)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention,
        completion_ids=input_ids[:, prompt_len:],
        completion_mask=attention[:, prompt_len:].float(),
        old_logps=old_logps,
        truncated=torch.tensor([c.finish_reason == "length" for c in completions]),
        texts=[c.text for c in completions],
        entropies=entropies,
    )


@dataclass
class PolicyForward:
    """What one training forward pass gives the loss. B rows, T completion tokens, K candidates."""

    logps: torch.Tensor  # (B, T) with gradients; padding positions hold 0 (or garbage), mask them
    entropy: torch.Tensor | None = None  # (B, T)
    topk_logps: torch.Tensor | None = None  # (B, T, K) the policy's own K most likely tokens, with gradients
    is_top1: torch.Tensor | None = None  # (B, T) bool: the sampled token is the most likely one
    log_z: torch.Tensor | None = None  # (B,) FlowRL's log Z(x) of each row's prompt, with gradients


def policy_logprobs(
    model, batch: RolloutBatch, temperature: float, with_entropy: bool = False, chunk_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(y_t | x, y_<t) of every completion token under `model` at `temperature`, with gradients.

    Returns (logps (B, T), entropies (B, T) or None); padding positions hold 0, mask them.
    """
    forward = policy_forward(model, batch, temperature, with_entropy, chunk_size=chunk_size)
    return forward.logps, forward.entropy


# Config fields of models whose logits are not just the LM head's output (soft-capping, scaling):
# their log-probs come from the model's own logits.
LOGIT_MODIFIERS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def unwrapped(model):
    """The Hugging Face model inside a DistributedDataParallel wrapper (TRL's accelerate adds one)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def head_is_plain(model) -> bool:
    """Whether the model's logits are its output embedding (a Linear) applied to the final hidden states."""
    model = unwrapped(model)
    head = model.get_output_embeddings()
    modified = any(getattr(model.config, name, None) not in (None, 1, 1.0) for name in LOGIT_MODIFIERS)
    return isinstance(head, torch.nn.Linear) and not modified


def policy_forward(
    model, batch: RolloutBatch, temperature: float, with_entropy: bool = False, top_k: int = 0, chunk_size: int = 0,
    with_log_z: bool = False,
) -> PolicyForward:
    """The policy's log-probs of the batch's completion tokens (see PolicyForward); entropy with
    gradients when with_entropy; top_k > 0 adds the top-k candidates' log-probs and the entropy
    (without gradients unless with_entropy); with_log_z adds FlowRL's log Z(x), the model's
    log_z_head on each prompt's mean final hidden state. The final hidden states of the real
    completion tokens go through the LM head chunk_size tokens at a time (0: automatic;
    sps.algorithms.lm_head), so the full logits are never held; chunk_size -1, and models with
    modified logits, take the whole-logits path."""
    from sps.algorithms.flowrl import HEAD

    device = next(model.parameters()).device
    tokens = batch.completion_ids.to(device)
    if chunk_size < 0 or not head_is_plain(model):
        logits, prompt_state = completion_forward(model, batch, with_log_z)
        forward = whole_logits_forward(logits, tokens, temperature, with_entropy, top_k)
        forward.log_z = getattr(model, HEAD)(prompt_state) if with_log_z else None
        return forward
    with head_returns_hidden(unwrapped(model)):  # the forward still goes through any wrapper, for its hooks
        hidden, prompt_state = completion_forward(model, batch, with_log_z)  # (B, T, H): the head passed its input through
    head = unwrapped(model).get_output_embeddings()
    real = batch.completion_mask.to(device).bool()
    logp, entropy, topk, is_top1 = head_logprobs(
        hidden[real], head.weight, head.bias, tokens[real], temperature, chunk_tokens(chunk_size, head.weight.shape[0]),
        top_k, with_entropy,
    )

    def spread(values: torch.Tensor | None, fill=0.0) -> torch.Tensor | None:  # (N, ...) -> (B, T, ...)
        if values is None:
            return None
        out = torch.full((*real.shape, *values.shape[1:]), fill, dtype=values.dtype, device=device)
        out[real] = values
        return out

    log_z = getattr(model, HEAD)(prompt_state) if with_log_z else None
    return PolicyForward(spread(logp), spread(entropy), spread(topk), spread(is_top1, False), log_z)


def whole_logits_forward(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, with_entropy: bool, top_k: int) -> PolicyForward:
    """policy_forward from whole (B, T, V) logits."""
    from sps.algorithms.losses import token_entropy, token_logprobs, token_logprobs_topk

    if top_k:
        logps, topk_logps, is_top1, entropy = token_logprobs_topk(logits, tokens, top_k, temperature, with_entropy)
        return PolicyForward(logps, entropy, topk_logps, is_top1)
    logps = token_logprobs(logits, tokens, temperature)
    return PolicyForward(logps, token_entropy(logits, temperature) if with_entropy else None)


def _pass_through(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


@contextmanager
def head_returns_hidden(model) -> Iterator[None]:
    """While inside, the model's forward returns its final hidden states where the logits would be
    (its output embedding passes its input through), so any caching and sharding stays the model's own."""
    head = model.get_output_embeddings()
    own = vars(head).get("forward")
    head.forward = _pass_through
    try:
        yield
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def completion_logits(model, batch: RolloutBatch) -> torch.Tensor:
    """(B, T, V) logits, column t predicting completion token t, with gradients (inside
    head_returns_hidden: the (B, T, H) final hidden states)."""
    return completion_forward(model, batch)[0]


def completion_forward(model, batch: RolloutBatch, with_prompt_state: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(completion_logits, prompt state): with_prompt_state adds each row's mean final hidden state
    over its prompt's tokens, (B, H) with gradients (FlowRL's log Z input), else None.

    Rows that share a prompt (the G completions of a group) share its forward pass: each distinct
    prompt runs once and its KV cache is copied to its rows, then the completions run on top. The
    values and gradients are those of one forward over the (B, Lp + T) batch, at a fraction of the
    cost when prompts are long next to completions (a chat prompt of 100 tokens, answers of 10).
    Under gradient checkpointing, which turns the KV cache off, and under torch.distributed, every
    row runs whole.
    """
    device = next(model.parameters()).device
    mask, ids = batch.attention_mask.to(device), batch.input_ids.to(device)
    positions = mask_positions(mask)
    lp, width = batch.prompt_length, batch.completion_ids.shape[1]
    checkpointing = any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    # Sharded processes must make the same forward calls (FSDP gathers the weights per call), and
    # whether rows share prompts differs between them, so a distributed run keeps every row whole.
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not (checkpointing or distributed):
        prompts, row_of = torch.unique(torch.cat([ids[:, :lp], mask[:, :lp]], dim=-1), dim=0, return_inverse=True)
        if len(prompts) < len(ids):
            return shared_prompt_logits(model, ids, mask, positions, prompts, row_of, lp, width, with_prompt_state)
    with warnings.catch_warnings():
        # FSDP2 warns that the sharded model returns a view (its last hidden states) on which an in-place
        # op would skip its backward hook; nothing here changes them in place (prompt_mean copies).
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=width + 1,
                    output_hidden_states=with_prompt_state)
    state = prompt_mean(out.hidden_states[-1][:, :lp], mask[:, :lp]) if with_prompt_state else None
    return out.logits[:, :-1], state  # the logits at column j predict the token at column j + 1


def prompt_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, Lp, H) final hidden states, (B, Lp) prompt mask -> (B, H), their mean over the prompt's tokens."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def shared_prompt_logits(
    model, ids, mask, positions, prompts, row_of, lp: int, width: int, with_prompt_state: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """completion_forward with each distinct prompt run once.

    ids, mask, positions: (B, Lp + T); prompts: (P, 2 Lp) the distinct prompt ids and masks side by
    side; row_of: (B,) each row's prompt. Returns ((B, T, V), (B, H) or None).
    """
    cache, cache_name = DynamicCache(config=model.config), cache_argument(model)
    prompt_mask = prompts[:, lp:]
    out = model(input_ids=prompts[:, :lp], attention_mask=prompt_mask, position_ids=mask_positions(prompt_mask),
                use_cache=True, logits_to_keep=1, output_hidden_states=with_prompt_state, **{cache_name: cache})
    state = prompt_mean(out.hidden_states[-1], prompt_mask)[row_of] if with_prompt_state else None
    first = out.logits[row_of, -1:]  # (B, 1, V): predicts completion token 0
    if width == 1:
        return first, state
    cache.batch_select_indices(row_of)  # differentiable: each row's copy sends its gradient back to the prompt
    out = model(input_ids=ids[:, lp:-1], attention_mask=mask[:, :-1], position_ids=positions[:, lp:-1],
                use_cache=True, **{cache_name: cache})
    return torch.cat([first, out.logits], dim=1), state

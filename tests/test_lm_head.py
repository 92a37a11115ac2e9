"""Log-probs through the LM head a chunk at a time (sps.algorithms.lm_head) equal the whole-logits
path in values and gradients, alone and inside the training forward (shared prompts included)."""

from __future__ import annotations

import pytest
import torch

from sps.algorithms.lm_head import chunk_tokens, head_logprobs
from sps.algorithms.losses import token_logprobs_topk
from sps.models.loading import load_policy
from sps.rollout.base import Completion
from sps.training.batch import collate, completion_logits, policy_forward, whole_logits_forward

TEMPERATURE = 0.7


def leaves(seed: int = 0, n: int = 13, h: int = 8, v: int = 50, bias: bool = False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(v, h, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(v, generator=g, dtype=torch.float64).requires_grad_() if bias else None
    tokens = torch.randint(0, v, (n,), generator=g)
    upstream = [torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64),
                torch.randn(n, 3, generator=g, dtype=torch.float64)]
    return hidden, weight, b, tokens, upstream


def whole(hidden, weight, bias, tokens):
    logits = hidden @ weight.T + (0 if bias is None else bias)
    logps, topk, is_top1, entropy = token_logprobs_topk(logits[None], tokens[None], 3, TEMPERATURE, entropy_grad=True)
    return logps[0], entropy[0], topk[0], is_top1[0]


@pytest.mark.parametrize("chunk", [1, 4, 13, 100])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_equal_the_whole_logits(chunk, bias):
    hidden, weight, b, tokens, upstream = leaves(bias=bias)
    expected = whole(hidden, weight, b, tokens)
    got = head_logprobs(hidden, weight, b, tokens, TEMPERATURE, chunk, top_k=3, with_entropy=True)
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g) if e.dtype == torch.bool else torch.allclose(e.double(), g.double(), atol=1e-5)
    inputs = [hidden, weight] + ([b] if bias else [])
    grads = lambda outs: torch.autograd.grad(sum((o.double() * u).sum() for o, u in zip(outs[:3], upstream)), inputs)  # noqa: E731
    for e, g in zip(grads(expected), grads(got), strict=True):
        assert torch.allclose(e, g, atol=1e-5)


def test_only_the_outputs_used_get_gradients():
    hidden, weight, _, tokens, upstream = leaves()
    logp, entropy, topk, is_top1 = head_logprobs(hidden, weight, None, tokens, TEMPERATURE, 5)
    assert entropy is None and topk is None and is_top1 is None
    expected = whole(hidden, weight, None, tokens)[0]
    g1 = torch.autograd.grad((logp.double() * upstream[0]).sum(), hidden)[0]
    g2 = torch.autograd.grad((expected * upstream[0]).sum(), hidden)[0]
    assert torch.allclose(g1, g2, atol=1e-5)
    _, entropy, _, _ = head_logprobs(hidden, weight, None, tokens, TEMPERATURE, 5, top_k=2)
    assert not entropy.requires_grad  # SimKO's detached entropy


def test_the_automatic_chunk_holds_about_2_26_logits():
    assert chunk_tokens(0, 151_936) == 441 and chunk_tokens(0, 24) == 2**26 // 24 and chunk_tokens(64, 151_936) == 64


def test_the_training_forward_equals_the_whole_logits_path(random_llama):
    model, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
    g = torch.Generator().manual_seed(0)
    prompts = [[3, 4, 5, 6], [7, 8]]
    groups = [[Completion([9 + (p + i + t) % 7 for t in range(1 + (p + i) % 4)], "", [0.0] * (1 + (p + i) % 4), "stop")
               for i in range(3)] for p in range(2)]  # 3 rows per prompt: the shared-prompt forward
    batch = collate(prompts, groups, pad_id=0)
    mask = batch.completion_mask.bool()
    upstream = torch.randn(batch.completion_ids.shape, generator=g)
    results = []
    for chunked in (True, False):
        model.zero_grad()
        if chunked:
            forward = policy_forward(model, batch, TEMPERATURE, with_entropy=True, top_k=3, chunk_size=2)
        else:
            forward = whole_logits_forward(completion_logits(model, batch), batch.completion_ids, TEMPERATURE, True, 3)
        loss = (forward.logps * upstream * mask).sum() + (forward.entropy * mask).sum() + (forward.topk_logps.sum(-1) * mask).sum()
        loss.backward()
        results.append((forward, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, grads_a), (b, grads_b) = results
    for name in ("logps", "entropy", "topk_logps"):
        assert torch.allclose(getattr(a, name)[mask], getattr(b, name)[mask], atol=1e-5), name
    assert torch.equal(a.is_top1[mask], b.is_top1[mask])
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name

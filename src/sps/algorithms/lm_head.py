"""Per-token log-probs, entropy and top-K candidates straight from the final hidden states, a chunk
of tokens at a time through the LM head, so the full (tokens x vocabulary) logits never exist.

One autograd function: the forward keeps only the hidden states (which the model holds anyway),
the token ids and each token's log-sum-exp; the backward recomputes each chunk's logits and turns
the incoming gradients into gradients of the hidden states and of the head's weight. The extra
peak memory is at most two chunk x V float32 buffers and the head's float32 gradient, against
about four m x T x V copies for the log-softmax over whole logits (bench/results/train_memory.md). Values and gradients equal that path's to float
rounding (tests/test_lm_head.py).

Shapes: N tokens, H hidden size, V vocabulary, K candidates. With z = (h W^T + b) / temperature
and p = softmax(z): logp = z_y - lse(z); entropy = lse(z) - sum p z; top-K values are the K
largest z - lse(z). Gradients with respect to z: logp: e_y - p; entropy: -p (log p + entropy);
a top-K value of token k: e_k - p.
"""

from __future__ import annotations

import torch

# Logits per chunk when the size is automatic: 2^26 float32 values (256 MiB), 441 tokens at
# Qwen2.5's vocabulary of 151,936 (a matmul of ~100 GFLOP at its width, enough to fill a GPU) and
# every token at once at the testbed's.
AUTO_CHUNK_LOGITS = 2**26


def chunk_tokens(chunk_size: int, vocab: int) -> int:
    """Tokens per chunk: chunk_size, or (0) as many as fit AUTO_CHUNK_LOGITS logits."""
    return chunk_size if chunk_size > 0 else max(1, AUTO_CHUNK_LOGITS // vocab)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """The chunk's temperature-scaled logits in float32, the matmul in the hidden states' dtype
    (weight and bias already cast to it); one chunk x V float32 buffer."""
    logits = hidden @ weight.T
    if bias is not None:
        logits += bias
    return logits.float().div_(temperature)


def _cast(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head in the compute dtype: fp32 master weights meet bf16 hidden states under mixed precision."""
    return weight.to(dtype), None if bias is None else bias.to(dtype)


class _ChunkedHead(torch.autograd.Function):
    """Every chunk works in place on at most two chunk x V float32 buffers, in forward and in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature, chunk, top_k, with_entropy):
        n = hidden.shape[0]
        logp = hidden.new_empty(n, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        entropy = hidden.new_empty(n, dtype=torch.float32) if with_entropy or top_k else None
        topk = hidden.new_empty(n, top_k, dtype=torch.float32) if top_k else None
        topk_ids = torch.empty(n, top_k, dtype=torch.long, device=hidden.device) if top_k else None
        w, b = _cast(weight, bias, hidden.dtype)
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            z = _logits(hidden[rows], w, b, temperature)
            lse[rows] = z.logsumexp(-1)
            logp[rows] = z.gather(-1, tokens[rows, None]).squeeze(-1) - lse[rows]
            if top_k:
                values, ids = z.topk(top_k, dim=-1)
                topk[rows], topk_ids[rows] = values - lse[rows, None], ids
            if entropy is not None:
                log_p = z.sub_(lse[rows, None])
                entropy[rows] = -log_p.exp().mul_(log_p).sum(-1)
            del z
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, entropy, topk_ids)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.set_materialize_grads(False)  # an output nobody used sends None, and costs nothing
        is_top1 = topk_ids[:, 0] == tokens if top_k else None
        constant = [t for t in (is_top1, None if with_entropy else entropy) if t is not None]
        ctx.mark_non_differentiable(*constant)  # one call: a second would replace the first
        return logp, entropy, topk, is_top1

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy, grad_topk, _):
        hidden, weight, bias, tokens, lse, entropy, topk_ids = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and ctx.needs_input_grad[2] else None
        w, b = _cast(weight, bias, hidden.dtype)
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            log_p = _logits(hidden[rows], w, b, ctx.temperature).sub_(lse[rows, None])
            # d/dz of g * logp_y is g (e_y - p); of g * (a top-K value at k), g (e_k - p); of
            # g * entropy, -g p (log p + entropy).
            scale = torch.zeros_like(lse[rows])  # the coefficient of -p
            if grad_logp is not None:
                scale += grad_logp[rows]
            if grad_topk is not None:
                scale += grad_topk[rows].sum(-1)
            if grad_entropy is not None:
                p = log_p.exp()
                log_p.add_(entropy[rows, None]).mul_(p).mul_(grad_entropy[rows, None])  # now the entropy term
                grad_z = p.mul_(-scale[:, None]).sub_(log_p)
                del log_p
            else:
                grad_z = log_p.exp_().mul_(-scale[:, None])
            if grad_logp is not None:
                grad_z.scatter_add_(-1, tokens[rows, None], grad_logp[rows, None])
            if grad_topk is not None:
                grad_z.scatter_add_(-1, topk_ids[rows], grad_topk[rows])
            grad_logits = grad_z.div_(ctx.temperature).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = grad_logits @ w
            if grad_weight is not None:
                if grad_logits.dtype == grad_weight.dtype:
                    grad_weight.addmm_(grad_logits.T, hidden[rows])
                else:
                    grad_weight += grad_logits.T @ hidden[rows]
            if grad_bias is not None:
                grad_bias += grad_logits.float().sum(0)
            del grad_z, grad_logits
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def head_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor, temperature: float = 1.0,
    chunk: int = 1024, top_k: int = 0, with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """hidden (N, H), the LM head's weight (V, H) and bias (V,) or None, tokens (N,) -> (log-probs
    (N,), entropy (N,) (with gradients only when with_entropy; present when with_entropy or top_k),
    top-K log-probs (N, K) with gradients, whether each token is the top-1 (N,) bool), all float32,
    through the head `chunk` tokens at a time."""
    return _ChunkedHead.apply(hidden, weight, bias, tokens, temperature, chunk, top_k, with_entropy)

"""The training forward and micro-batching: rows that share a prompt share its forward, and how rows
are grouped into micro-batches changes neither values nor gradients."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sps.rollout.base import Completion
from sps.training.batch import collate, completion_logits
from sps.training.config import TrainConfig
from sps.training.optimize import microbatches


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(config).train()


def completion(ids: list[int]) -> Completion:
    return Completion(token_ids=ids, text="", logprobs=[0.0] * len(ids), finish_reason="stop")


def test_a_shared_prompt_forward_gives_the_logits_and_gradients_of_the_full_forward():
    # Two prompts of different lengths (so one is left-padded), three completions each of different lengths.
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    groups = [[completion([20, 21, 1]), completion([22, 1]), completion([23, 24, 25, 26])],
              [completion([30]), completion([31, 32, 33, 1]), completion([34, 35])]]
    batch = collate(prompts, groups, pad_id=0)
    mask = batch.completion_mask.bool()
    results = []
    for share in (True, False):
        model = tiny_llama()
        model.zero_grad()
        if share:
            logits = completion_logits(model, batch)
        else:  # one forward over every row whole, the reference
            positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
            width = batch.completion_ids.shape[1]
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions,
                           logits_to_keep=width + 1).logits[:, :-1]
        picked = logits.log_softmax(-1).gather(-1, batch.completion_ids[..., None]).squeeze(-1)
        (picked * mask).sum().backward()
        results.append((picked[mask].detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (shared, shared_grads), (full, full_grads) = results
    assert shared.shape == (16,)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0 or "embed" in name
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_token_budget_micro_batches_fill_up_to_the_budget():
    lengths = [2, 3, 3, 5, 8, 20]  # sorted, prompt of 4 tokens: a micro-batch costs rows x (4 + longest)
    assert microbatches(lengths, 4, 0, 24) == [slice(0, 3), slice(3, 5), slice(5, 6)]  # 3 x 7, 2 x 12, 1 x 24
    assert microbatches(lengths, 4, 2, 24) == [slice(0, 2), slice(2, 4), slice(4, 5), slice(5, 6)]  # rows capped too
    assert microbatches(lengths, 4, 0, 10) == [slice(i, i + 1) for i in range(6)]  # a row over the budget goes alone
    assert microbatches(lengths, 4, 4, 0) == [slice(0, 4), slice(4, 6)]  # no budget: rows only
    assert microbatches([], 4, 4, 10) == []


def test_how_rows_are_grouped_leaves_the_loss_and_gradient_unchanged(random_llama):
    from sps.models.loading import load_policy
    from sps.training.distributed import World
    from sps.training.optimize import LossPart, optimize

    model, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
    groups = [[Completion([9 + (p + i + t) % 7 for t in range(1 + 3 * ((p + i) % 4))], "", [-1.0] * (1 + 3 * ((p + i) % 4)), "stop")
               for i in range(4)] for p in range(3)]
    batch = collate([[3, 4, 5], [6, 7, 8], [5, 5, 5]], groups, pad_id=0)
    weights = batch.completion_mask / batch.completion_mask.sum()
    part = LossPart(batch, lambda rows: weights[rows], lambda forward, rows: (-forward.logps * forward.logps.exp(), {}))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    results = []
    for settings in ({"micro_batch_size": 0}, {"micro_batch_size": 1}, {"max_tokens_per_microbatch": 30}):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(start[n])
        sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # one step at lr 1 moves the parameters by -gradient
        stats = optimize(model, sgd, World(), [part], TrainConfig(max_grad_norm=0.0, **settings), 1, 1, seed=0)
        results.append((stats["loss"], {n: start[n] - p.detach() for n, p in model.named_parameters()}))
    assert max(float(g.abs().max()) for g in results[0][1].values()) > 1e-4  # a real gradient
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        for name, grad in grads.items():
            assert torch.allclose(grad, results[0][1][name], atol=1e-7), name

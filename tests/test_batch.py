"""The training forward: rows that share a prompt share its forward, with the same values and gradients."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sps.rollout.base import Completion
from sps.training.batch import collate, completion_logits


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

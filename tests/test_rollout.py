"""The HF rollout engine on a tiny random Llama: what it returns and that its log-probs are right."""

import pytest
import torch

from sps.models.loading import load_policy
from sps.rollout.base import SamplingParams
from sps.rollout.hf import HFEngine, filter_logits
from sps.training.batch import collate, policy_logprobs


@pytest.fixture(scope="module")
def engine(random_llama):
    model, tokenizer = load_policy(str(random_llama), dtype="float32", device="cpu")
    return HFEngine(model, tokenizer, batch_size=16)


def prompts(engine, texts):
    return [engine.tokenizer.encode(t) for t in texts]


def test_returns_n_completions_per_prompt_within_the_token_budget(engine):
    ids = prompts(engine, ["1 2 3>6:", "  4 5>9:"])
    groups = engine.generate(ids, n=5, params=SamplingParams(max_new_tokens=12), seed=0)
    assert [len(g) for g in groups] == [5, 5]
    for group in groups:
        for c in group:
            assert 1 <= len(c.token_ids) <= 12
            assert len(c.logprobs) == len(c.token_ids) == len(c.entropies)
            assert all(lp <= 0 for lp in c.logprobs)
            if c.finish_reason == "stop":
                assert c.token_ids[-1] == engine.tokenizer.eos_token_id
            else:
                assert len(c.token_ids) == 12 and engine.tokenizer.eos_token_id not in c.token_ids
            assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_same_seed_same_samples_and_other_seed_other_samples(engine):
    ids = prompts(engine, ["1 2 3>6:"])
    params = SamplingParams(max_new_tokens=10)
    first = [c.token_ids for c in engine.generate(ids, 6, params, seed=1)[0]]
    assert first == [c.token_ids for c in engine.generate(ids, 6, params, seed=1)[0]]
    assert first != [c.token_ids for c in engine.generate(ids, 6, params, seed=2)[0]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_a_teacher_forced_forward_pass(engine, temperature):
    # Prompts of different lengths (left padding) and a batch that is compacted as rows finish.
    ids = prompts(engine, ["1 2 3 4>10:", "7>7:", "  2 5>10:"])
    groups = engine.generate(ids, 8, SamplingParams(temperature=temperature, max_new_tokens=16), seed=3)
    batch = collate(ids, groups, engine.tokenizer.pad_token_id)
    with torch.no_grad():
        logps, _ = policy_logprobs(engine.model, batch, temperature)
    mask = batch.completion_mask.bool()
    assert torch.allclose(logps[mask], batch.old_logps[mask], atol=1e-4)
    assert {c.finish_reason for g in groups for c in g} == {"stop", "length"}  # both paths exercised


def test_top_k_one_is_greedy(engine):
    ids = prompts(engine, ["3 4>12:"])
    group = engine.generate(ids, 4, SamplingParams(top_k=1, max_new_tokens=8), seed=0)[0]
    assert len({tuple(c.token_ids) for c in group}) == 1
    assert all(abs(lp) < 5 for lp in group[0].logprobs)


def test_filter_logits_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, top_k=0, top_p=0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    assert filter_logits(logits, top_k=3, top_p=1.0).isfinite().tolist() == [[True, True, True, False]]
    # The most likely token survives even a tiny top_p.
    assert filter_logits(logits, top_k=0, top_p=1e-6).isfinite().tolist() == [[True, False, False, False]]


def test_bad_arguments_are_named(engine):
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[5], []], 1, SamplingParams(max_new_tokens=2))

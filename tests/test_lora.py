"""LoRA adapters (peft): only the adapters train, the reference is the base with them off, checkpoints
resume exactly, and `sps export --merge` gives a folder from_pretrained loads."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from test_train import rows, tiny_run

from sps.cli import main
from sps.models.loading import load_policy
from sps.models.lora import add_adapters, merged_weights
from sps.rollout.base import Completion
from sps.training.batch import collate, policy_logprobs
from sps.training.config import PeftConfig, TrainConfig
from sps.training.trainer import train

LORA = PeftConfig(r=4, lora_alpha=8.0, target_modules=["q_proj", "v_proj"])


def lora_run(model, output_dir, **changes) -> TrainConfig:
    return tiny_run(model, output_dir, peft=LORA, learning_rate=1e-2, eval_every=-1, probe_problems=0, **changes)


def batch():
    groups = [[Completion([9 + (p + i + t) % 7 for t in range(2 + (p + i) % 3)], "", [0.0] * (2 + (p + i) % 3), "stop")
               for i in range(3)] for p in range(2)]
    return collate([[3, 4, 5], [6, 7]], groups, pad_id=0)


def test_a_lora_run_trains_only_the_adapters_and_exports_a_loadable_merged_model(random_llama, tmp_path):
    run_dir = train(lora_run(random_llama, tmp_path / "run", max_steps=3, save_every=3), show_progress=False)
    checkpoint = run_dir / "checkpoints" / "step_000003"
    saved = load_file(checkpoint / "adapter_model.safetensors")
    assert saved and all("lora_" in name for name in saved)  # the checkpoint holds the adapters only
    assert any(float(t.abs().max()) > 0 for name, t in saved.items() if "lora_B" in name)  # B moved off its zero init
    assert main(["export", str(run_dir), "--out", str(tmp_path / "merged")]) == 2  # a LoRA run needs --merge
    assert main(["export", str(run_dir), "--merge", "--out", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    start = load_file(random_llama / "model.safetensors")
    for name, weight in start.items():
        if "q_proj" in name or "v_proj" in name:
            assert not torch.equal(merged[name], weight), name  # the adapters are folded in
        else:
            assert torch.equal(merged[name], weight), name  # the base did not move: bit-identical


def test_the_reference_with_adapters_off_is_the_frozen_base(random_llama):
    model, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
    frozen, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
    model = add_adapters(model, 4, 8.0, 0.0, ["q_proj", "v_proj"])
    with torch.no_grad():  # a trained adapter: B away from its zero init
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    rows_ = batch()
    mask = rows_.completion_mask.bool()
    with torch.no_grad(), model.disable_adapter():
        off = policy_logprobs(model, rows_, 0.7)[0]
    with torch.no_grad():
        on = policy_logprobs(model, rows_, 0.7)[0]
        reference = policy_logprobs(frozen, rows_, 0.7)[0]
    assert torch.allclose(off[mask], reference[mask], atol=1e-6)
    assert not torch.allclose(on[mask], reference[mask], atol=1e-3)


def test_merged_weights_equal_peft_merge_and_unload(random_llama):
    model, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
    model = add_adapters(model, 4, 8.0, 0.0, ["q_proj", "v_proj"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    ours = dict(merged_weights(model))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_merged = model.merge_and_unload().state_dict()
    assert set(ours) == set(peft_merged)
    for name, tensor in peft_merged.items():
        assert torch.allclose(ours[name], tensor, atol=1e-6), name
    assert len(before) > len(ours)  # merged_weights read the model without folding the adapters into it


def test_a_lora_checkpoint_resumes_to_the_log_of_an_uninterrupted_run(random_llama, tmp_path):
    cfg = lora_run(random_llama, tmp_path / "whole", max_steps=4, save_every=2, beta=0.04)  # beta: the reference is used
    whole = rows(train(cfg, show_progress=False))
    resumed_cfg = replace(cfg, output_dir=str(tmp_path / "resumed"))
    train(replace(resumed_cfg, max_steps=2), show_progress=False)
    resumed = rows(train(resumed_cfg, show_progress=False))
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert any(r["kl"] > 0 for r in whole[1:])  # the policy moved away from its reference
    for a, b in zip(whole, resumed):
        for key, value in a.items():
            if isinstance(value, float) and not key.startswith(("time/", "tokens_per_second/")):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (a["step"], key)


def test_the_memory_estimate_counts_gradients_and_optimizer_state_for_the_adapters_only():
    from transformers import Qwen2Config

    from sps.preflight import KNOWN_SHAPES
    from sps.training.memory import count_parameters, lora_parameters, shape_of, training_memory

    config = Qwen2Config(**KNOWN_SHAPES["Qwen/Qwen2.5-Math-7B"])
    shape = shape_of(config, count_parameters(config))
    adapters = lora_parameters(shape, 16, ["q_proj", "v_proj"])
    assert adapters == 28 * 16 * ((3584 + 3584) + (3584 + 512))  # r (in + out) per module and layer
    full = training_memory(shape, "bfloat16", 1, 100, 100, reference=True)
    lora = training_memory(shape, "bfloat16", 1, 100, 100, reference=True, adapter_params=adapters)
    assert lora["optimizer"] == 8 * adapters and lora["gradients"] == 4 * adapters and lora["reference"] == 0
    assert lora["weights"] == 2 * shape.params + 4 * adapters  # the frozen base in bf16, the adapters in fp32
    assert full["optimizer"] == 8 * shape.params and full["weights"] == 4 * shape.params

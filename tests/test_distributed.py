"""FSDP2 on two processes (gloo, CPU) takes the update of one unsharded process: sharded or
replicated, with gradient checkpointing, bf16 compute, LoRA adapters or FlowRL's log Z head, tied or
untied embeddings."""

import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from sps.models.loading import load_policy
from sps.rollout.base import SamplingParams
from sps.rollout.hf import HFEngine
from sps.training.config import TrainConfig

SCRIPT = Path(__file__).with_name("distributed_update.py")


def torchrun(*args: str, port: int) -> list[str]:
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    return [launcher, "--nproc_per_node", "2", "--master_port", str(port), *args]


def tied_copy(model_dir: Path, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_take_the_update_of_one(random_llama, tmp_path):
    model, tokenizer = load_policy(str(random_llama), dtype="float32", device="cpu")
    prompts = [tokenizer.encode(t) for t in ["1 2>3:", "  4 5 6>15:", "7 8>1:", "9>9:"]]
    groups = HFEngine(model, tokenizer).generate(prompts, 4, SamplingParams(max_new_tokens=10), seed=0)
    # Rewards with signal in three groups and none in one (its rows are skipped, so the processes
    # run different numbers of micro-batches); three minibatches exercise the partition.
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    cfg = replace(TrainConfig(), num_generations=4, learning_rate=1e-2, max_completion_length=10, micro_batch_size=2)
    batch_file = tmp_path / "batch.pt"
    config = {k: v for k, v in asdict(cfg).items() if not isinstance(v, dict)}  # sections keep their defaults
    torch.save({"config": config, "prompt_ids": prompts, "groups": groups, "rewards": rewards}, batch_file)
    tied = tied_copy(random_llama, tmp_path / "tied")

    out = tmp_path / "results.pt"
    subprocess.run(torchrun(str(SCRIPT), str(batch_file), str(out), str(random_llama), str(tied), port=29517), check=True)
    results = torch.load(out, weights_only=False)

    for model_dir in (str(random_llama), str(tied)):
        one = results[(model_dir, "one process")]
        assert ("lm_head.weight" in one["grads"]) == (model_dir == str(random_llama))  # tied: one tensor
        start = load_policy(model_dir, dtype="float32", device="cpu")[0].state_dict()
        assert set(one["params"]) == set(start)  # the full state dict, tied lm_head included
        moved = max(float((one["params"][k] - start[k]).abs().max()) for k in start)
        assert moved > 1e-3  # the three steps did something
        for setting in ("fsdp", "ddp", "fsdp+checkpointing"):
            two = results[(model_dir, setting)]
            # Gradients: the sum over processes is the one-process gradient up to float rounding
            # (an average would be off by a factor of two).
            for name, grad in one["grads"].items():
                assert torch.allclose(grad, two["grads"][name], rtol=0, atol=1e-6), (model_dir, setting, name)
            # Parameters after three AdamW steps: Adam divides by the gradient's size, which
            # magnifies float rounding in tiny gradient entries (measured below 3e-5).
            for name, param in one["params"].items():
                assert torch.allclose(param, two["params"][name], rtol=0, atol=1e-4), (model_dir, setting, name)
        # LoRA under FSDP2: the adapters' gradients and parameters of one process; the base frozen.
        one_lora, two_lora = results[(model_dir, "one process, lora")], results[(model_dir, "fsdp+lora")]
        assert one_lora["grads"] and all("lora_" in name for name in one_lora["grads"])
        for name, grad in one_lora["grads"].items():
            assert torch.allclose(grad, two_lora["grads"][name], rtol=0, atol=1e-6), (model_dir, name)
        for name, param in one_lora["params"].items():
            assert torch.allclose(param, two_lora["params"][name], rtol=0, atol=1e-4), (model_dir, name)
            if "lora_" not in name:
                assert torch.equal(param, two_lora["params"][name]), name  # frozen on every process
        # FlowRL: the log Z head, a submodule the trainer calls outside the model's forward, is
        # sharded with the root and gets its gradient summed over the processes like every weight.
        one_flowrl, two_flowrl = results[(model_dir, "one process, flowrl")], results[(model_dir, "fsdp+flowrl")]
        assert {name for name in one_flowrl["grads"] if name.startswith("log_z_head.")} == {
            f"log_z_head.net.{i}.{p}" for i in (0, 2, 4, 6, 8) for p in ("weight", "bias")}
        for name, grad in one_flowrl["grads"].items():
            assert torch.allclose(grad, two_flowrl["grads"][name], rtol=0, atol=1e-6), (model_dir, name)
        for name, param in one_flowrl["params"].items():
            assert torch.allclose(param, two_flowrl["params"][name], rtol=0, atol=1e-4), (model_dir, name)
        # bf16 compute on fp32 weights: the same gradient to bf16 precision.
        bf16 = results[(model_dir, "fsdp+bf16")]
        for name, grad in one["grads"].items():
            scale = float(grad.abs().max())
            assert float((bf16["grads"][name] - grad).abs().max()) <= 0.05 * scale + 1e-6, (model_dir, name)


def test_fsdp_options_without_a_process_group_are_refused_with_the_way_out(random_llama, tmp_path):
    from sps.training.distributed import parallelize
    from sps.training.validate import validate

    model, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="torchrun"):
        parallelize(model, "fsdp", torch.float32, True, False)
    assert parallelize(model, "fsdp", torch.float32, False, True) is model and model.is_activation_checkpointing
    with pytest.raises(ValueError, match="dtype must be"):
        validate(replace(TrainConfig(), model="x", dtype="fp8"))
    with pytest.raises(ValueError, match="parallelism must be one of fsdp, ddp"):
        validate(replace(TrainConfig(), model="x", parallelism="zero3"))


def test_one_process_in_bf16_keeps_fp32_master_weights_and_computes_in_bf16(random_llama, tmp_path):
    """dtype bfloat16 on one process: the parameters and AdamW's moments stay float32, the forward
    computes in bfloat16, and the gradient is the fp32 one to bf16 precision."""
    from sps.training.batch import collate, policy_logprobs
    from sps.training.distributed import parallelize

    model, tokenizer = load_policy(str(random_llama), dtype="float32", device="cpu")
    groups = HFEngine(model, tokenizer).generate([[3, 4, 5], [6, 7]], 3, SamplingParams(max_new_tokens=8), seed=0)
    batch = collate([[3, 4, 5], [6, 7]], groups, tokenizer.pad_token_id)
    mask = batch.completion_mask.bool()
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        model, _ = load_policy(str(random_llama), dtype="float32", device="cpu")
        model = parallelize(model, "fsdp", dtype, False, False)
        logps, _ = policy_logprobs(model, batch, 1.0)
        (logps * mask).sum().backward()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        optimizer.step()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())
        grads.append({n: p.grad for n, p in model.named_parameters()})
        if dtype == torch.bfloat16:  # the forward really ran in bf16: its matmuls round
            assert model(input_ids=batch.input_ids[:1]).logits.dtype == torch.bfloat16
    for name, grad in grads[0].items():
        assert float((grads[1][name] - grad).abs().max()) <= 0.05 * float(grad.abs().max()) + 1e-6, name
        assert not torch.equal(grads[1][name], grad) or float(grad.abs().max()) == 0

"""The first check to run on a machine with a GPU: does sps train correctly and fast on CUDA, and
is the dry run's memory estimate right?

  (a) testbed GRPO and SPS for --steps steps on CUDA in bfloat16 and float32: every loss finite,
      the reward rising, seconds per step against the same run on the CPU (a few steps);
  (b) a randomly initialised Qwen2.5-Math-1.5B-shaped model (its config built here, nothing
      downloaded), at its full 28 layers, trained as `sps train` does on one GPU (fp32 master
      weights and AdamW state, bf16 autocast): one training step at the paper recipe's micro-batch
      with 1k- and 3k-token completions, with the LM head a chunk at a time (the default) and from
      the whole logits (logits_chunk_size -1, the path before issue 23): peak memory, tokens/s,
      model FLOPs utilisation; and the HF rollout engine's tokens/s sampling 64 x 1k tokens;
  (c) the dry run's memory estimate (sps.training.memory) next to each measured peak.
Writes gpu_check.json and gpu_check.md into --out. Needs only torch, transformers and the sps
package; no network. About 5-8 minutes on one H100/H200.

  python bench/gpu_check.py --out bench/results/gpu_check
  python bench/gpu_check.py --cpu-smoke --out /tmp/gpu_check   # seconds, tiny shapes, any machine
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from sps.models.testbed import TestbedConfig, build_testbed
from sps.training.config import TrainConfig
from sps.training.distributed import autocast_forward
from sps.training.memory import GIB, Layout, ModelShape, peak_memory, rollout_memory, training_memory

# Dense bf16 tensor-core peak FLOP/s by device name, for MFU (vendor data sheets).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
QWEN_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, max_position_embeddings=512, tie_word_embeddings=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU in seconds (what the test suite runs)")
    p.add_argument("--steps", type=int, default=None, help="testbed training steps per run (default 30; 3 with --cpu-smoke)")
    p.add_argument("--cpu-steps", type=int, default=None, help="steps of the CPU reference run (default 5; 2 with --cpu-smoke)")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per forward/backward in (b): the 1.5B recipe's")
    return p.parse_args(argv)


def testbed_runs(folder: Path, model: Path, device: str, steps: int, cpu_steps: int, smoke: bool) -> list[dict]:
    """(a): GRPO and SPS on the testbed per dtype on `device`, plus a float32 CPU reference."""
    from sps.training.trainer import train

    base = TrainConfig(
        model=str(model), train_size=128, prompts_per_step=16, num_generations=8, max_completion_length=32 if smoke else 48,
        learning_rate=5e-4, eval_every=-1, probe_problems=0, max_steps=steps, save_every=steps, keep_checkpoints=1,
    )
    runs = [(algo, dtype, device, steps) for dtype in ("bfloat16", "float32") for algo in ("grpo", "sps")]
    runs.append(("grpo", "float32", "cpu", cpu_steps))
    results = []
    for algo, dtype, dev, n in runs:
        out = folder / f"{algo}-{dtype}-{dev}"
        cfg = replace(base, algorithm=algo, dtype=dtype, device=dev, max_steps=n, save_every=n, output_dir=str(out))
        train(cfg, show_progress=False)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rewards = [r["reward"] for r in rows]
        k = max(1, len(rewards) // 5)
        results.append({
            "algorithm": algo, "dtype": dtype, "device": dev, "steps": n,
            # A NaN loss means no row had an advantage (no update); an infinite one, or a skipped update, is the failure.
            "finite_losses": not any(math.isinf(r["loss"]) for r in rows) and not any(r["nonfinite_updates"] for r in rows),
            "nonfinite_updates": sum(r["nonfinite_updates"] for r in rows),
            "reward_first": sum(rewards[:k]) / k, "reward_last": sum(rewards[-k:]) / k,
            "seconds_per_step": sum(r["time/step"] for r in rows[1:] or rows) / max(len(rows) - 1, 1),
        })
        results[-1]["reward_rose"] = results[-1]["reward_last"] > results[-1]["reward_first"]
    cpu = results[-1]["seconds_per_step"]
    for r in results[:-1]:
        r["speedup_vs_cpu"] = cpu / r["seconds_per_step"]
    return results


def numbered_tokenizer(vocab: int):
    """A tokenizer whose every id decodes (to "t<id>"), so a random model's samples decode."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab - 1)} | {"<|endoftext|>": vocab - 1}
    tok = Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def synthetic_batch(vocab: int, rows: int, prompt: int, completion: int):
    from sps.training.batch import RolloutBatch

    ids = torch.randint(0, vocab - 1, (rows, prompt + completion))
    mask = torch.ones(rows, completion)
    return RolloutBatch(ids, torch.ones_like(ids), ids[:, prompt:], mask, torch.zeros(rows, completion),
                        torch.zeros(rows, dtype=torch.bool), [""] * rows, None)


def training_step(model, shape: ModelShape, dtype: str, device: str, micro: int, prompt: int, completion: int, chunk_size: int) -> dict:
    """(b)+(c): one optimizer step on `micro` synthetic sequences through sps's own optimize(), the
    LM head in chunks (chunk_size 0: automatic) or from the whole logits (-1)."""
    from sps.training.distributed import World
    from sps.training.optimize import LossPart, optimize

    batch = synthetic_batch(shape.vocab, micro, prompt, completion)
    weights = batch.completion_mask / batch.completion_mask.sum()
    part = LossPart(batch, lambda rows: weights[rows], lambda forward, rows: (-forward.logps, {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    timings = []
    for _ in range(2):  # the first step allocates AdamW's state and warms the kernels
        sync(device)
        reset_peak(device)
        start = time.perf_counter()
        optimize(model, optimizer, World(), [part], TrainConfig(temperature=1.0, micro_batch_size=micro, logits_chunk_size=chunk_size), 1, 1, seed=0)
        sync(device)
        timings.append(time.perf_counter() - start)
    tokens = micro * (prompt + completion)
    seconds = timings[-1]
    estimate = training_memory(shape, dtype, micro, prompt, completion, Layout(), chunk_logits=chunk_size >= 0, chunk_size=chunk_size)
    del optimizer
    return {
        "micro_batch": micro, "prompt_tokens": prompt, "completion_tokens": completion,
        "logits": "whole" if chunk_size < 0 else "chunked", "estimated_logits_gib": estimate["logits"] / GIB,
        "seconds": seconds, "tokens_per_second": tokens / seconds,
        "mfu": mfu(6 * shape.params * tokens / seconds, device),
        "peak_gib": peak(device), "estimated_peak_gib": peak_memory(estimate, None) / GIB,
    }


def rollout_speed(model, tokenizer, shape: ModelShape, dtype: str, device: str, sequences: int, tokens: int) -> dict:
    """(b)+(c): the HF engine sampling `sequences` x `tokens` new tokens from a 64-token prompt."""
    from sps.rollout.base import SamplingParams
    from sps.rollout.hf import HFEngine

    model.generation_config.eos_token_id = tokenizer.eos_token_id
    engine = HFEngine(model, tokenizer, batch_size=sequences)
    prompts = torch.randint(0, shape.vocab - 1, (sequences, 64)).tolist()
    sync(device)
    reset_peak(device)
    start = time.perf_counter()
    groups = engine.generate(prompts, 1, SamplingParams(1.0, 1.0, 0, tokens), seed=0)
    sync(device)
    seconds = time.perf_counter() - start
    generated = sum(len(c.token_ids) for g in groups for c in g)
    weights = shape.params * {"bfloat16": 2, "float32": 4}[dtype]
    estimate = weights + sum(rollout_memory(shape, dtype, sequences, 64, tokens).values())
    return {"sequences": sequences, "new_tokens": tokens, "generated": generated, "seconds": seconds,
            "tokens_per_second": generated / seconds, "peak_gib": peak(device), "estimated_peak_gib": estimate / GIB}


def guarded(measure, *args) -> dict:
    """A measurement, or what stopped it: running out of GPU memory is itself a calibration point."""
    try:
        return measure(*args)
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        return {"error": f"out of memory: {str(e)[:200]}", "peak_gib": peak("cuda")}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if device.startswith("cuda") else None


def mfu(flops_per_second: float, device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((flops_per_second / v for k, v in PEAK_FLOPS.items() if k in name), None)


def qwen_shaped(shape_settings: dict, dtype: str, device: str):
    """A randomly initialised Qwen2 model of the given shape in float32 (the master weights), its
    forward run under autocast to `dtype` as the trainer does on one process, and its ModelShape."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sps.training.memory import shape_of

    config = Qwen2Config(rope_theta=10000.0, **shape_settings)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: 1.5B parameters take a while on a CPU
        model = Qwen2ForCausalLM(config)
    if dtype != "float32":
        model = autocast_forward(model, getattr(torch, dtype))
    return model, shape_of(config, sum(p.numel() for p in model.parameters()))


def markdown(result: dict) -> str:
    lines = [f"# GPU check: {result['device_name']}", "", f"torch {result['torch']}, {result['mode']}, {result['seconds']:.0f} s in all", "",
             "## (a) testbed training", "", "| run | steps | finite losses | reward first -> last | s/step | vs CPU |", "|---|---:|---|---|---:|---:|"]
    for r in result["testbed"]:
        speed = f"{r['speedup_vs_cpu']:.1f}x" if "speedup_vs_cpu" in r else "-"
        lines.append(f"| {r['algorithm']} {r['dtype']} {r['device']} | {r['steps']} | {r['finite_losses']} | "
                     f"{r['reward_first']:.3f} -> {r['reward_last']:.3f} | {r['seconds_per_step']:.3f} | {speed} |")
    lines += ["", f"## (b, c) {result['large_model']} ({result['parameters'] / 1e9:.2f}B parameters, {result['dtype']})", "",
              "| step | tokens/s | MFU | peak GiB | estimated GiB | of which logits, estimated |", "|---|---:|---:|---:|---:|---:|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in result["training_steps"]:
        if "error" in r:
            lines.append(f"| {r['error']} | - | - | {fmt(r['peak_gib'], '.1f')} | - | - |")
            continue
        lines.append(f"| micro-batch {r['micro_batch']} x ({r['prompt_tokens']} + {r['completion_tokens']}), {r['logits']} logits | "
                     f"{r['tokens_per_second']:,.0f} | {fmt(r['mfu'], '.1%')} | {fmt(r['peak_gib'], '.1f')} | {r['estimated_peak_gib']:.1f} | "
                     f"{r['estimated_logits_gib']:.1f} |")
    r = result["rollout"]
    if "error" in r:
        lines.append(f"| HF engine: {r['error']} | - | - | - | - | - |")
    else:
        lines.append(f"| HF engine {r['sequences']} x {r['new_tokens']} new tokens | {r['tokens_per_second']:,.0f} | - | "
                     f"{fmt(r['peak_gib'], '.1f')} | {r['estimated_peak_gib']:.1f} | - |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; run it on a GPU machine, or use --cpu-smoke", file=sys.stderr)
        return 2
    device = "cpu" if smoke else "cuda"
    steps, cpu_steps = args.steps or (3 if smoke else 30), args.cpu_steps or (2 if smoke else 5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tb = TestbedConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, steps=20, batch_size=16) if smoke else TestbedConfig(steps=400, warmup_steps=30)
    testbed = build_testbed(tb, show_progress=False)  # into the cache ($SPS_CACHE_DIR), reused by the next check
    result = {
        "mode": "cpu-smoke" if smoke else "cuda", "device_name": torch.cuda.get_device_name() if not smoke else "cpu",
        "torch": torch.__version__, "testbed": testbed_runs(out / "runs", testbed, device, steps, cpu_steps, smoke),
    }
    dtype = "float32" if smoke else "bfloat16"
    model, shape = qwen_shaped(TINY if smoke else QWEN_1_5B, dtype, device)
    lengths = [(16, 32), (16, 96)] if smoke else [(256, 1024), (256, 3072)]
    result.update(large_model="tiny Qwen2" if smoke else "Qwen2.5-Math-1.5B-shaped", parameters=shape.params, dtype=dtype)
    micro = 2 if smoke else args.micro_batch
    result["training_steps"] = [guarded(training_step, model, shape, dtype, device, micro, p, c, chunk) for p, c in lengths for chunk in (0, -1)]
    model.zero_grad(set_to_none=True)
    result["rollout"] = guarded(rollout_speed, model.eval(), numbered_tokenizer(shape.vocab), shape, dtype, device, 4 if smoke else 64, 16 if smoke else 1024)
    result["seconds"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

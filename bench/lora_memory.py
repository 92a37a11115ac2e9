"""Memory of one training update of SmolLM2-135M-Instruct with LoRA against full fine-tuning, on this
CPU, beside the dry run's estimate (sps.training.memory).

Each case runs in a fresh process: the model (float32), AdamW with its state allocated beforehand,
then one update of 8 rows of a 128-token prompt and 64 completion tokens (one micro-batch). It
reports the process's peak RSS, the RSS before the update, and what the estimate puts in
weights + optimizer (what the RSS before holds beyond torch itself) and gradients + activations +
logits (what the update adds).

    python bench/lora_memory.py          # writes bench/results/lora_memory.md
    python bench/lora_memory.py --case lora
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from train_memory import random_loss_part, rss_bytes  # bench/ is the script's folder, so on sys.path

RESULTS = Path(__file__).resolve().parent / "results" / "lora_memory.md"
ROWS, PROMPT, COMPLETION = 8, 128, 64
RANK, TARGETS = 16, ["q_proj", "k_proj", "v_proj", "o_proj"]
GIB = 1024**3


def run_case(case: str) -> dict:
    from sps.models.loading import load_policy
    from sps.models.lora import add_adapters
    from sps.training.config import TrainConfig
    from sps.training.distributed import World
    from sps.training.memory import Layout, count_parameters, lora_parameters, shape_of, training_memory
    from sps.training.optimize import optimize

    torch.set_num_threads(1)
    baseline = rss_bytes()
    model, _ = load_policy("smollm2-135m-instruct", dtype="float32", device="cpu")
    if case == "lora":
        torch.manual_seed(0)
        model = add_adapters(model, RANK, 2.0 * RANK, 0.0, TARGETS)
    with torch.no_grad():  # the weights are memory-mapped from the file: touch every page now, so RSS holds them
        for p in model.parameters():
            p.add_(0)
    shape = shape_of(model.config, count_parameters(model.config))
    adapters = lora_parameters(shape, RANK, TARGETS) if case == "lora" else 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.0)
    for p in trainable:  # allocate AdamW's state now
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    part = random_loss_part(model.config.vocab_size, ROWS, PROMPT, COMPLETION)
    before = rss_bytes()
    optimize(model, optimizer, World(), [part], TrainConfig(micro_batch_size=ROWS), 1, 1, seed=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    estimate = training_memory(shape, "float32", ROWS, PROMPT, COMPLETION, Layout(), adapter_params=adapters)
    return {"case": case, "params": shape.params, "trainable": sum(p.numel() for p in trainable), "estimated_adapters": adapters,
            "rss_before_model": baseline, "rss_before_update": before, "peak_rss": peak, "estimate": estimate}


def table(results: list[dict]) -> str:
    lines = ["# SmolLM2-135M-Instruct: a LoRA update against a full one (bench/lora_memory.py)", "",
             f"Float32 on this CPU, one thread; one update of {ROWS} rows x ({PROMPT} prompt + {COMPLETION} completion tokens); "
             f"LoRA rank {RANK} on {', '.join(TARGETS)}. RSS in GiB; 'held' is the RSS before the update minus the RSS before the "
             "model was loaded (torch itself), 'added' the update's peak minus the RSS before it; the estimated peak is the RSS "
             "before the model plus the whole estimate. Setting up AdamW's state allocates the gradients once and frees them, "
             "so 'held' includes freed gradient memory that the update then reuses: compare the peaks.", "",
             "| case | trainable parameters | held, measured | weights + optimizer, estimated | added, measured | "
             "gradients + activations + logits, estimated | peak RSS | peak, estimated |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        e = r["estimate"]
        lines.append(f"| {r['case']} | {r['trainable'] / 1e6:.2f}M | {(r['rss_before_update'] - r['rss_before_model']) / GIB:.2f} | "
                     f"{(e['weights'] + e['optimizer']) / GIB:.2f} | {(r['peak_rss'] - r['rss_before_update']) / GIB:.2f} | "
                     f"{(e['gradients'] + e['activations'] + e['logits']) / GIB:.2f} | {r['peak_rss'] / GIB:.2f} | "
                     f"{(r['rss_before_model'] + sum(e.values())) / GIB:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="", help="full or lora: run one case in this process and print its JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    results = []
    for case in ("full", "lora"):
        out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    text = table(results)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

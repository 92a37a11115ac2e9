"""Memory and speed of one training update at the paper's width, on this CPU: the log-probs from
the whole logits (logits_chunk_size -1, the path before issue 23) against the LM head a chunk at a
time (the default), beside the dry run's estimate (sps.training.memory).

The model is Qwen2.5-Math-1.5B's shape (hidden 1536, MLP 8960, 12 heads / 2 KV heads, vocabulary
151,936, tied embeddings) with 2 of its 28 layers and random weights, in float32. One update: 4
rows of a 64-token prompt and T completion tokens, one minibatch, one micro-batch of 4 rows
unless said, AdamW with its state allocated beforehand. Each case runs in a fresh process: its
peak RSS (ru_maxrss) minus the RSS before the update is what the update added (gradients,
activations, logits), which the estimate's training part (gradients + activations + logits)
predicts. The update is timed; tokens per second are set against the machine's float32 matmul
rate (6 FLOPs per parameter per token, the head included).

It also reports the padding of one step's micro-batches on a long-tailed length mix (512 rows
with completion lengths drawn from a log-normal, median 300, capped at 3,072): micro-batches of
a fixed 8 rows sorted by length (the trainer's grouping without a budget) against a token budget.

    python bench/train_memory.py                 # every case, ~40 min on one thread; writes bench/results/train_memory.md
                                                 # (each case's measurement is kept in train_memory.jsonl: a rerun measures the missing ones)
    python bench/train_memory.py --case chunked:1024:4   # one case (path:T:rows), prints its JSON line
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "train_memory.md"
MEASURED = RESULTS.with_suffix(".jsonl")  # one JSON line per finished case
PROMPT = 64
SHAPE = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=2,
             vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)
CASES = ["whole:512:4", "chunked:512:4", "whole:1024:4", "chunked:1024:4", "whole:3072:1", "chunked:3072:1", "chunked:3072:4"]
GIB = 1024**3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def random_loss_part(vocab: int, rows: int, prompt: int, completion: int):
    """One minibatch of random token rows (prompt + completion each) and a plain log-likelihood loss on it."""
    from sps.rollout.base import Completion
    from sps.training.batch import collate
    from sps.training.optimize import LossPart

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (prompt,), generator=g).tolist() for _ in range(rows)]
    groups = [[Completion(torch.randint(0, vocab, (completion,), generator=g).tolist(), "", [-1.0] * completion, "length")]
              for _ in range(rows)]
    batch = collate(prompts, groups, pad_id=0)
    weights = batch.completion_mask / batch.completion_mask.sum()
    return LossPart(batch, lambda index: weights[index], lambda forward, index: (-forward.logps, {}))


def matmul_flops_per_second() -> float:
    """The best of 10 timings of a 2048^3 float32 matmul in this process (under whatever else runs)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best


def run_case(case: str) -> dict:
    """One update (and a timed second one) in this process; returns its measurements."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sps.training.config import TrainConfig
    from sps.training.distributed import World
    from sps.training.memory import Layout, shape_of, training_memory
    from sps.training.optimize import optimize

    path, completion, rows = case.split(":")
    completion, rows = int(completion), int(rows)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPE)
    model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    part = random_loss_part(SHAPE["vocab_size"], rows, PROMPT, completion)
    cfg = TrainConfig(micro_batch_size=rows, logits_chunk_size=-1 if path == "whole" else 0, max_grad_norm=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    for param in model.parameters():  # allocate AdamW's state now, so the update adds what the estimate's training part counts
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    before = rss_bytes()
    start = time.perf_counter()
    optimize(model, optimizer, World(), [part], cfg, 1, 1, seed=0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    estimate = training_memory(shape_of(config, params), "float32", rows, PROMPT, completion, Layout(),
                               chunk_logits=path != "whole")
    tokens = rows * (PROMPT + completion)
    return {
        "case": case, "params": params, "update_bytes": peak - before, "peak_rss": peak,
        "estimate": {k: estimate[k] for k in ("gradients", "activations", "logits")},
        "seconds": seconds, "tokens_per_second": tokens / seconds, "flops_per_token": 6 * params,
        "matmul_flops": matmul_flops_per_second(),  # under the load the update saw; the table takes the best over cases
    }


def padding_fractions() -> dict[str, float]:
    """Padding of one step's micro-batches on a long-tailed length mix: fixed rows against a budget."""
    from sps.training.optimize import microbatches

    g = torch.Generator().manual_seed(0)
    lengths = (torch.randn(512, generator=g) * 0.8 + torch.log(torch.tensor(300.0))).exp().clamp(8, 3072).long().sort().values.tolist()
    shuffled = [lengths[i] for i in torch.randperm(len(lengths), generator=g).tolist()]
    found = {}
    # Before issue 23: 8 rows a micro-batch in the minibatch's random order, each padded to its own longest.
    for label, order, max_rows, budget in (("8 rows a micro-batch, random order (before)", shuffled, 8, 0),
                                           ("8 rows a micro-batch, sorted by length", lengths, 8, 0),
                                           ("budget 16,384 tokens, sorted", lengths, 0, 16_384),
                                           ("budget 32,768 tokens, sorted", lengths, 0, 32_768)):
        groups = microbatches(order, PROMPT, max_rows, budget)  # consecutive rows in the order given
        computed = sum((g.stop - g.start) * max(order[g]) for g in groups)
        found[label] = {"padding": 1 - sum(lengths) / computed, "micro_batches": len(groups),
                        "largest": max((g.stop - g.start) * (PROMPT + max(order[g])) for g in groups)}
    return found


def table(results: list[dict], padding: dict) -> str:
    flops = max(r["matmul_flops"] for r in results)
    lines = ["# One training update at Qwen2.5-Math-1.5B's width, 2 of 28 layers, on this CPU (bench/train_memory.py)", "",
             f"Float32, one thread; 4 rows x (64 prompt + T completion tokens) unless said; tokens/s (6 FLOPs per parameter per token) are set "
             f"against the machine's float32 matmul rate on one thread, {flops / 1e9:.0f} GFLOP/s (each case times a 2048^3 matmul "
             "after its update; the best of those). 'added' is the update's peak RSS minus the RSS before it; the estimate "
             "is sps.training.memory's gradients + activations + logits; the peak RSS also holds the weights, AdamW's state and "
             "torch itself (~4 GiB). Recorded on a 2-core AMD EPYC host, each case while a one-thread job used the other core, "
             "which the speed columns carry.", "",
             "| path | T | rows | peak RSS (GiB) | added (GiB) | estimate (GiB) | estimate / added | of which logits, estimated (GiB) | tokens/s | of the matmul rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        path, completion, rows = r["case"].split(":")
        estimate = sum(r["estimate"].values())
        lines.append(f"| {path} | {completion} | {rows} | {r['peak_rss'] / GIB:.2f} | {r['update_bytes'] / GIB:.2f} | {estimate / GIB:.2f} | "
                     f"{estimate / r['update_bytes']:.2f} | {r['estimate']['logits'] / GIB:.2f} | {r['tokens_per_second']:.0f} | "
                     f"{r['tokens_per_second'] * r['flops_per_token'] / flops:.0%} |")
    lines += ["", "Padding of one step's micro-batches, 512 rows with log-normal completion lengths (median 300, capped at 3,072):", "",
              "| grouping | padding | micro-batches | largest (padded tokens) |", "|---|---|---|---|"]
    lines += [f"| {label} | {p['padding']:.1%} | {p['micro_batches']} | {p['largest']:,} |" for label, p in padding.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="", help="run one case (path:T:rows) in this process and print its JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    done = {r["case"]: r for r in map(json.loads, MEASURED.read_text().splitlines())} if MEASURED.is_file() else {}
    for case in [c for c in CASES if c not in done]:
        out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True)
        done[case] = json.loads(out.stdout.strip().splitlines()[-1])
        with MEASURED.open("a") as f:
            f.write(json.dumps(done[case]) + "\n")
        print(done[case], flush=True)
    text = table([done[c] for c in CASES], padding_fractions())
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

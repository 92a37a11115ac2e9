"""Rollout throughput: sps's HF engine against transformers' `generate` and against the machine's limit.

Both sample n completions of the same prompts at temperature 1 with the same token budget;
`generate` is given the prompts already repeated n times (its usual use for GRPO) and returns no
log-probs, which favours it. Tokens are counted up to and including EOS. The limit is the
matrix-multiply throughput of one batched decode step of the model, measured in the same run:
every weight matrix, the LM head included, as a plain `x @ W.T` for a (rows, in_features) input;
limit tok/s = rows / seconds per step (attention, sampling and the prefill not counted).

The run writes its table, with date, machine, load and command, as a `##` section of --out
(replacing the section of the same models and shapes, keeping the others).

    python bench/rollout_throughput.py [--models testbed,10m] [--shapes 32x16] [--threads 2] [--repeats 3]
    python bench/rollout_throughput.py --models smollm2 --shapes 4x8,16x8,8x64 --max-new-tokens 96 --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch
import transformers

from sps.models.testbed import TestbedConfig, build_testbed
from sps.rollout.base import SamplingParams
from sps.rollout.hf import HFEngine
from sps.rollout.prefix_cache import left_pad
from sps.tasks.benchmarks import load_benchmark
from sps.tasks.templates import encode_prompt

RESULTS = Path(__file__).parent / "results" / "rollout_throughput.md"


def ten_million_model(testbed_dir: str):
    """A ~10M-parameter Llama with the testbed's tokenizer (random weights: it rarely stops early)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(testbed_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=320, intermediate_size=1280, num_hidden_layers=8, num_attention_heads=5,
        num_key_value_heads=5, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def load_model(name: str, count: int):
    """(model, tokenizer, token ids of `count` prompts) for a --models entry."""
    from sps.models.loading import load_policy

    if name == "smollm2":  # a chat model: GSM8K questions in its chat template, as training gives them
        model, tokenizer = load_policy("smollm2-135m-instruct", dtype="float32", device="cpu")
        problems = load_benchmark("gsm8k_train").problems
        return model, tokenizer, [encode_prompt("chat", p.problem, tokenizer) for p in problems[:count]]
    testbed = str(build_testbed(TestbedConfig()))
    model, tokenizer = load_policy(testbed, dtype="float32", device="cpu") if name == "testbed" else ten_million_model(testbed)
    return model, tokenizer, [tokenizer.encode(p.problem) for p in load_benchmark("countdown-train").problems[:count]]


def generated_tokens(rows: torch.Tensor, eos_id: int) -> int:
    """Tokens up to and including the first EOS of each row of (B, T) new tokens."""
    is_eos = rows == eos_id
    first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, torch.full((rows.shape[0],), rows.shape[1]))
    return int(first.sum())


def time_hf_generate(model, tokenizer, prompt_ids, n, max_new) -> tuple[float, int]:
    ids, mask = left_pad([p for p in prompt_ids for _ in range(n)], tokenizer.pad_token_id, "cpu")
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    seconds = time.perf_counter() - start
    return seconds, generated_tokens(out[:, ids.shape[1] :], tokenizer.eos_token_id)


def time_engine(engine, prompt_ids, n, max_new) -> tuple[float, int]:
    start = time.perf_counter()
    groups = engine.generate(prompt_ids, n, SamplingParams(temperature=1.0, max_new_tokens=max_new), seed=0)
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for g in groups for c in g)


def matmul_limit(model, rows: int, repeats: int) -> float:
    """Tokens/s if a decode step of `rows` sequences cost only its weight matmuls (best of `repeats`)."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights}
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass warms up
            start = time.perf_counter()
            for w in weights:
                inputs[w.shape[1]] @ w.T
            best = min(best, time.perf_counter() - start)
    return rows / best


def write_section(path: Path, heading: str, body: str) -> None:
    """Put `## heading` + body into the results file, in place of an older section of that heading."""
    section = f"## {heading}\n\n{body}\n"
    parts = re.split(r"(?m)^(?=## )", path.read_text() if path.exists() else "# Rollout throughput\n\n")
    for i, part in enumerate(parts):
        if part.startswith(f"## {heading}\n"):
            parts[i] = section + ("\n" if i + 1 < len(parts) else "")
            break
    else:
        parts[-1] = parts[-1].rstrip("\n") + "\n\n"
        parts.append(section)
    path.write_text("".join(parts))


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="testbed,10m", help="comma-separated: testbed, 10m, smollm2")
    parser.add_argument("--shapes", default="32x16", help="comma-separated prompts x samples, e.g. 4x8,16x8")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    shapes = [tuple(int(x) for x in shape.split("x")) for shape in args.shapes.split(",")]

    lines = [
        "| model | params | prompts x samples | mean tokens (generate / engine) | generate tok/s | engine tok/s "
        "| engine / generate | matmul limit tok/s | engine / limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models.split(","):
        model, tokenizer, prompts = load_model(name, max(p for p, _ in shapes))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        engine = HFEngine(model, tokenizer, batch_size=max(p * n for p, n in shapes))
        time_engine(engine, prompts[:2], 2, 4)  # warm-ups
        time_hf_generate(model, tokenizer, prompts[:2], 2, 4)
        for p, n in shapes:
            torch.manual_seed(0)
            base = [time_hf_generate(model, tokenizer, prompts[:p], n, args.max_new_tokens) for _ in range(args.repeats)]
            ours = [time_engine(engine, prompts[:p], n, args.max_new_tokens) for _ in range(args.repeats)]
            base_rate = max(tokens / seconds for seconds, tokens in base)
            our_rate = max(tokens / seconds for seconds, tokens in ours)
            limit = matmul_limit(model, p * n, args.repeats)
            line = (
                f"| {name} | {params:.1f}M | {p} x {n} | {base[0][1] / (p * n):.0f} / {ours[0][1] / (p * n):.0f} "
                f"| {base_rate:,.0f} | {our_rate:,.0f} | {our_rate / base_rate:.2f}x | {limit:,.0f} | {our_rate / limit:.2f} |"
            )
            print(line, flush=True)
            lines.append(line)

    body = "\n".join([
        f"- Date: {datetime.date.today()}. Machine: {os.cpu_count()}-core {cpu_name()} ({platform.machine()}), "
        f"load average {load_at_start:.2f} at the start. torch {torch.__version__}, transformers {transformers.__version__}.",
        f"- Command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}` (torch threads: {args.threads}, "
        f"<= {args.max_new_tokens} new tokens, temperature 1, best of {args.repeats}).",
        "",
        *lines,
    ])
    write_section(args.out, f"{args.models}: {args.shapes}, <= {args.max_new_tokens} new tokens", body)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Rollout throughput: sps's HF engine against transformers' `generate`, same model, same prompts.

Both sample n completions of the same Countdown prompts at temperature 1 with the same token
budget; `generate` is given the prompts already repeated n times (its usual use for GRPO) and
returns no log-probs, which favours it. Tokens are counted up to and including EOS.

    python bench/rollout_throughput.py [--models testbed,10m] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import transformers

from sps.models.testbed import TestbedConfig, build_testbed
from sps.rollout.base import SamplingParams
from sps.rollout.hf import HFEngine
from sps.tasks.benchmarks import load_benchmark


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


def generated_tokens(rows: torch.Tensor, eos_id: int) -> int:
    """Tokens up to and including the first EOS of each row of (B, T) new tokens."""
    is_eos = rows == eos_id
    first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, torch.full((rows.shape[0],), rows.shape[1]))
    return int(first.sum())


def time_hf_generate(model, tokenizer, prompt_ids, n, max_new) -> tuple[float, int]:
    ids = torch.tensor([p for p in prompt_ids for _ in range(n)])  # equal-width prompts
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    seconds = time.perf_counter() - start
    return seconds, generated_tokens(out[:, ids.shape[1] :], tokenizer.eos_token_id)


def time_engine(engine, prompt_ids, n, max_new) -> tuple[float, int]:
    start = time.perf_counter()
    groups = engine.generate(prompt_ids, n, SamplingParams(temperature=1.0, max_new_tokens=max_new), seed=0)
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for g in groups for c in g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="testbed,10m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()

    testbed = str(build_testbed(TestbedConfig()))
    problems = load_benchmark("countdown-train").problems[: args.prompts]
    print(f"# rollout throughput, {args.prompts} prompts x {args.n} samples, <= {args.max_new_tokens} new tokens, "
          f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}, {platform.machine()}")
    print("| model | params | generate tok/s | sps engine tok/s | ratio |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        if name == "testbed":
            from sps.models.loading import load_policy

            model, tokenizer = load_policy(testbed, dtype="float32", device="cpu")
        else:
            model, tokenizer = ten_million_model(testbed)
        prompt_ids = [tokenizer.encode(p.problem) for p in problems]
        engine = HFEngine(model, tokenizer, batch_size=args.prompts * args.n)
        time_engine(engine, prompt_ids[:2], 2, 4)  # warm-up
        base = [time_hf_generate(model, tokenizer, prompt_ids, args.n, args.max_new_tokens) for _ in range(args.repeats)]
        ours = [time_engine(engine, prompt_ids, args.n, args.max_new_tokens) for _ in range(args.repeats)]
        base_rate = max(tokens / seconds for seconds, tokens in base)
        our_rate = max(tokens / seconds for seconds, tokens in ours)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"| {name} | {params:.1f}M | {base_rate:,.0f} | {our_rate:,.0f} | {our_rate / base_rate:.2f}x |")


if __name__ == "__main__":
    main()

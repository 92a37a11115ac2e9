"""Rollout speed and weight-sync cost: vLLM's engine against sps's HF engine, same model and prompts.

Run in the vLLM venv (`make install-vllm`): both engines sample n completions of the same Countdown
prompts at temperature 1 with the same token budget; each call is timed after one warm-up call.
The sync is `VLLMEngine.load_weights` (the push after every update). On CPU this is a correctness
test bed: vLLM's speed is for GPUs.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python bench/vllm_vs_hf.py
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    import vllm

    from sps.evaluation.evaluate import make_engine
    from sps.models.loading import load_policy
    from sps.models.testbed import TestbedConfig, build_testbed
    from sps.rollout.base import SamplingParams
    from sps.tasks.benchmarks import load_benchmark

    transformers.utils.logging.set_verbosity_error()
    testbed = str(build_testbed(TestbedConfig()))
    model, tokenizer = load_policy(testbed, dtype="float32", device="cpu")
    prompt_ids = [tokenizer.encode(p.problem) for p in load_benchmark("countdown-train").problems[: args.prompts]]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens)
    start = time.perf_counter()
    engines = {"hf": make_engine("hf", model, tokenizer, testbed, args.prompts * args.n)}
    engines["vllm"] = make_engine("vllm", model, tokenizer, testbed, args.prompts * args.n)
    vllm_start = time.perf_counter() - start

    rates = {}
    for name, engine in engines.items():
        engine.generate(prompt_ids[:2], 2, params, seed=0)  # warm-up
        runs = []
        for r in range(args.repeats):
            t = time.perf_counter()
            groups = engine.generate(prompt_ids, args.n, params, seed=r)
            runs.append((time.perf_counter() - t, sum(len(c.token_ids) for g in groups for c in g)))
        rates[name] = runs
    syncs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        engines["vllm"].load_weights(model)
        syncs.append(time.perf_counter() - t)
    engines["vllm"].close()

    print(f"# rollouts, {args.prompts} prompts x {args.n} samples, <= {args.max_new_tokens} new tokens, {args.threads} threads, "
          f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, {platform.machine()}")
    print("| engine | s per call (each run) | tokens per call | tok/s (best) |")
    print("|---|---|---|---|")
    for name, runs in rates.items():
        seconds = ", ".join(f"{s:.2f}" for s, _ in runs)
        print(f"| {name} | {seconds} | {runs[0][1]} | {max(t / s for s, t in runs):,.0f} |")
    print(f"\nvLLM engine start (build + first weight push): {vllm_start:.1f} s; weight push: "
          + ", ".join(f"{s:.3f}" for s in syncs) + " s")


if __name__ == "__main__":
    main()

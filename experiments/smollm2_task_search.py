"""Which procedural task can SmolLM2-135M-Instruct partly solve? A screen of reasoning-gym tasks.

For each candidate (an `rg:` task with generator settings, and a prompt template) the offline
SmolLM2-135M-Instruct samples `--n` completions of `--problems` validation problems at `--temperature`
with at most `--max-new-tokens` tokens; the table gives Pass@1, Pass@n, the answer format it used and
the completion length. The target (issue 11): Pass@1 in [0.05, 0.40] and Pass@64 >= 0.5 and at
least twice Pass@1, with completions short enough for a 16 x 8 training step under 40 s on 2 cores.
The chosen candidate is then measured on 300 test problems with n = 64 by `sps eval` (docs/real-model.md).

    python experiments/smollm2_task_search.py [--problems 24] [--n 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sps.evaluation.metrics import pass_at_k_array
from sps.grading.procedural import grade_procedural_serial
from sps.models.loading import load_policy
from sps.rollout.base import SamplingParams
from sps.rollout.hf import HFEngine
from sps.tasks.benchmarks import load_benchmark
from sps.tasks.templates import encode_prompt

RESULTS = Path(__file__).resolve().parent / "results"
# (spec without its split, template). Easy arithmetic and counting first: a 135M model that rambles
# under "reason step by step" needs tasks where a short answer can be right.
CANDIDATES = [
    ("rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=2", "chat"),
    ("rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=2", "chat-answer"),
    ("rg:leg_counting?min_animals=1&max_animals=2&max_instances=3", "chat-answer"),
    ("rg:letter_counting?min_words=3&max_words=5", "chat-answer"),
    ("rg:aiw", "chat-answer"),
    ("rg:spell_backward?min_word_len=3&max_word_len=5", "chat-answer"),
    ("rg:family_relationships", "chat-answer"),
    ("rg:needle_haystack?min_num_statements=5&max_num_statements=10", "chat-answer"),
    ("rg:gcd?min_numbers=2&max_numbers=2&min_value=2&max_value=100", "chat-answer"),
    ("rg:needle_haystack?min_num_statements=4&max_num_statements=6", "chat-answer"),
    ("rg:letter_counting?min_words=1&max_words=2", "chat-answer"),
    ('rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2&operators=["+"]&allow_parentheses=false&allow_negation=false', "chat-answer"),
]


def with_split(spec: str, split: str, size: int) -> str:
    body, _, query = spec.partition("?")
    return f"{body}:{split}?{query}&size={size}" if query else f"{body}:{split}?size={size}"


def screen(engine: HFEngine, tokenizer, spec: str, template: str, problems: int, n: int, max_new_tokens: int,
           temperature: float) -> dict:
    bench = load_benchmark(with_split(spec, "val", problems))
    prompts = [encode_prompt(template, p.problem, tokenizer) for p in bench.problems]
    start = time.time()
    groups = engine.generate(prompts, n=n, params=SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens), seed=0)
    seconds = time.time() - start
    grades = [[grade_procedural_serial(c.text, p.meta) for c in g] for g, p in zip(groups, bench.problems, strict=True)]
    correct = np.array([sum(g.correct for g in row) for row in grades])
    tokens = [len(c.token_ids) for g in groups for c in g]
    return {
        "spec": spec, "template": template, "problems": problems, "n": n, "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "pass@1": float(pass_at_k_array([n] * problems, correct, 1).mean()),
        f"pass@{n}": float(pass_at_k_array([n] * problems, correct, n).mean()),
        "statuses": dict(Counter(g.status for row in grades for g in row)),
        "mean_tokens": float(np.mean(tokens)), "truncated": float(np.mean([c.finish_reason == "length" for g in groups for c in g])),
        "tokens_per_s": sum(tokens) / seconds, "prompt_tokens": float(np.mean([len(p) for p in prompts])),
        "example": groups[0][0].text[:200],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--only", default="", help="comma-separated candidate numbers (0-based) to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_policy("smollm2-135m-instruct", dtype="float32", device="cpu")
    engine = HFEngine(model, tokenizer, batch_size=256)
    chosen = [CANDIDATES[int(i)] for i in args.only.split(",")] if args.only else CANDIDATES
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "smollm2_task_search.jsonl"
    for spec, template in chosen:
        row = screen(engine, tokenizer, spec, template, args.problems, args.n, args.max_new_tokens, args.temperature)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{row['pass@1']:.3f} {row[f'pass@{args.n}']:.3f} tokens {row['mean_tokens']:.0f} trunc {row['truncated']:.2f} "
              f"{row['tokens_per_s']:.0f} tok/s {row['statuses']} | {spec} {template} T={args.temperature} | {row['example'][:80]!r}", flush=True)


if __name__ == "__main__":
    main()

"""Time per GRPO step: sps's trainer against TRL's GRPOTrainer, same model, batch and lengths.

A step = sample G completions for each of P prompts, grade them, and take `steps_per_generation`
optimizer steps on them (TRL counts each optimizer step as a step: one of our steps is
`steps_per_generation` of TRL's). Both run on the testbed model with the countdown verifier as
reward, no KL, one PPO epoch, DAPO loss; TRL samples with `model.generate`. The first step of each
is warm-up and not timed. TRL is a bench dependency only: pip install -e '.[bench]'.

    python bench/grpo_step_vs_trl.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def run_trl(model_dir: str, problems, args) -> float:
    """Seconds per generation batch (steps_per_generation optimizer steps) with TRL."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sps.grading.countdown import verify

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": p.problem, "numbers": p.meta["numbers"], "target": p.meta["target"]} for p in problems])

    def reward(completions, numbers, target, **_):
        return [float(verify(c, n, t).correct) for c, n, t in zip(completions, numbers, target)]

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter())

    rollouts = args.prompts * args.generations
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=rollouts // args.minibatches,
        steps_per_generation=args.minibatches,
        num_generations=args.generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        top_k=0,
        learning_rate=1e-4,
        loss_type="dapo",
        beta=0.0,
        num_iterations=1,
        max_steps=args.minibatches * (args.steps + 1),
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.add_callback(Clock())
    trainer.train()
    warm = ends[args.minibatches - 1]  # the end of the first generation batch
    return (ends[-1] - warm) / args.steps


def run_sps(model_dir: str, args) -> tuple[float, dict]:
    """Seconds per step with sps, and the mean time split."""
    from sps.io import read_jsonl
    from sps.training.config import TrainConfig
    from sps.training.trainer import train

    out = tempfile.mkdtemp()
    cfg = replace(
        TrainConfig(),
        model=model_dir,
        prompts_per_step=args.prompts,
        num_generations=args.generations,
        max_completion_length=args.max_completion_length,
        steps_per_generation=args.minibatches,
        max_steps=args.steps + 1,
        eval_every=-1,
        save_every=10_000,
        output_dir=out,
        threads=args.threads,
    )
    train(cfg, show_progress=False)
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))[1:]
    split = {k: sum(r[k] for r in rows) / len(rows) for k in ("time/step", "time/generate", "time/grade", "time/train")}
    return split["time/step"], split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--generations", type=int, default=16)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()

    from sps.models.testbed import TestbedConfig, build_testbed
    from sps.tasks.benchmarks import load_benchmark
    from sps.tasks.prompts import fixed_prompts

    model_dir = str(build_testbed(TestbedConfig()))
    problems = fixed_prompts(load_benchmark("countdown-train").problems, 512, 0)
    ours, split = run_sps(model_dir, args)
    theirs = run_trl(model_dir, problems, args)
    import trl

    print(f"# GRPO step, {args.prompts} prompts x {args.generations} completions, <= {args.max_completion_length} tokens, "
          f"{args.minibatches} optimizer steps per step, {args.threads} threads, trl {trl.__version__}")
    print("| trainer | s/step | generate | grade | train |")
    print("|---|---|---|---|---|")
    print(f"| TRL GRPOTrainer | {theirs:.2f} | | | |")
    print(f"| sps | {ours:.2f} | {split['time/generate']:.2f} | {split['time/grade']:.2f} | {split['time/train']:.2f} |")
    print(f"\nsps / TRL time per step: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()

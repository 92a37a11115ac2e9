"""SPS with TRL: TRL's GRPOTrainer plus SPS's inverse-RL steps, on any sps benchmark and grader.

    pip install -e '.[trl]'
    python examples/trl_sps.py --model testbed --max-steps 20                 # the built-in testbed, CPU
    accelerate launch --num_processes 8 examples/trl_sps.py --model Qwen/Qwen2.5-Math-1.5B \\
        --data math_train --template qwen-boxed --max-completion-length 3000 --use-vllm

Everything TRL offers (accelerate, DeepSpeed ZeRO-3, vLLM colocate or server mode) is set through
SPSGRPOConfig as through GRPOConfig; the SPS options are its sps_* fields (docs/trl.md).
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from sps.grading.registry import get_grader
from sps.integrations.trl import SPSGRPOConfig, SPSGRPOTrainer
from sps.models.loading import resolve_model_path
from sps.tasks.benchmarks import load_benchmark
from sps.tasks.templates import render_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="testbed", help="a folder, a hub id, smollm2-135m-instruct, or testbed")
    parser.add_argument("--data", default="countdown-train", help="an sps benchmark name or JSON Lines path")
    parser.add_argument("--template", default="", help="qwen-boxed | chat | plain (empty: the data's default)")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--prompts-per-step", type=int, default=8, help="per process")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--rl-steps", type=int, default=1)
    parser.add_argument("--irl-steps", type=int, default=1)
    parser.add_argument("--reshape-strength", type=float, default=1.0)
    parser.add_argument("--use-vllm", action="store_true", help="vLLM colocate rollouts (GPU)")
    parser.add_argument("--output-dir", default="out/trl_sps")
    args = parser.parse_args()

    if args.model == "testbed":
        from sps.models.testbed import TestbedConfig, build_testbed

        model_path = str(build_testbed(TestbedConfig()))
    else:
        model_path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    data = load_benchmark(args.data)
    template = args.template or data.template
    problems = data.problems
    grader = get_grader(data.grader)
    dataset = Dataset.from_list([{"prompt": render_prompt(template, p.problem, tokenizer), "index": i} for i, p in enumerate(problems)])

    def correct(completions, index, **_):
        """1 for a correct completion, else 0, by sps's grader for the data."""
        return [float(g.correct) for g in grader.grade(completions, [problems[i] for i in index])]

    config = SPSGRPOConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        beta=0.0,
        loss_type="dapo",
        use_vllm=args.use_vllm,
        vllm_mode="colocate",
        bf16=torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        sps_rl_steps=args.rl_steps,
        sps_irl_steps=args.irl_steps,
        sps_reshape_strength=args.reshape_strength,
    )
    trainer = SPSGRPOTrainer(model=model, reward_funcs=correct, args=config, train_dataset=dataset, processing_class=tokenizer)
    try:
        trainer.train()
    finally:
        grader.close()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()

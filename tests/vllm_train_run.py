"""An `sps train` run with the vLLM engine on a tiny model (in-process, or one per process under
torchrun, evaluating at steps 0 and 3 with every process's engine and keeping the best policy).
When the trainer shuts its engine down after the last step, each process records how far its
engine's log-probs are from its trained policy's and how far the policy moved."""

import json
import sys
from dataclasses import replace
from pathlib import Path

from sps.evaluation import evaluate
from sps.models.loading import load_policy
from sps.rollout.base import SamplingParams
from sps.rollout.vllm_engine import policy_weights
from sps.training.batch import collate, policy_logprobs
from sps.training.config import PeftConfig, TrainConfig
from sps.training.trainer import train


def logprob_gap(model, tokenizer, prompts, groups, temperature: float) -> float:
    """Largest |engine log-prob - policy log-prob| over the sampled tokens."""
    import torch

    batch = collate(prompts, groups, tokenizer.pad_token_id)
    with torch.no_grad():
        logps = policy_logprobs(model, batch, temperature)[0]
    return float(((logps - batch.old_logps).abs() * batch.completion_mask).max())


def write_data(path: Path) -> Path:
    """16 prompts over the characters "3 >" whose answer is 3 (the math grader takes the last number)."""
    path.write_text("".join(json.dumps({"problem": "3" * a + " " + "3" * b + ">", "answer": "3"}) + "\n" for a in range(4) for b in range(4)))
    return path


def train_and_watch(model_dir: str, data: str, output_dir: str, lora_rank: int = 0, evaluate_too: bool = False) -> tuple[Path, dict]:
    """Trains 3 steps of SPS with the vLLM engine (with LoRA adapters of `lora_rank` if > 0);
    evaluate_too: 5 problems x 4 samples at steps 0 and 3 in batches of 4 (5 batches), keeping the best."""
    seen = {}
    make_engine = evaluate.make_engine

    def make_and_watch(*args, **kwargs):
        engine = make_engine(*args, **kwargs)
        model, tokenizer = args[1], args[2]
        close = engine.close

        def check_then_close():
            prompts = [tokenizer.encode("33 3>")]
            seen["gap"] = logprob_gap(model, tokenizer, prompts, engine.generate(prompts, 8, SamplingParams(max_new_tokens=8)), 1.0)
            # Weights as the engine receives them: with adapters, the base with them merged in.
            start = dict(policy_weights(load_policy(model_dir, dtype="float32", device="cpu")[0]))
            trained = dict(policy_weights(model))
            seen["moved"] = max(float((trained[name] - start[name]).abs().max()) for name in start)
            seen["checksum"] = sum(float(tensor.double().sum()) for tensor in trained.values())
            close()

        engine.close = check_then_close
        return engine

    evaluate.make_engine = make_and_watch
    cfg = replace(
        TrainConfig(), model=model_dir, engine="vllm", train_data=data, prompt_template="plain", algorithm="sps",
        # Every prompt recurs every step, so the IRL step finds demonstrations in the buffer.
        train_size=16, prompts_per_step=16, num_generations=4, max_completion_length=8, learning_rate=1e-2,
        max_steps=3, eval_every=-1, probe_problems=0, save_every=100, threads=1, output_dir=output_dir,
        peft=PeftConfig(r=lora_rank, lora_alpha=2.0 * max(lora_rank, 1)),
    )
    if evaluate_too:
        cfg = replace(cfg, eval_every=3, eval_benchmark=data, eval_limit=5, eval_n=4, generation_batch_size=4, keep_best=True)
    try:
        return train(cfg, show_progress=False), seen
    finally:
        evaluate.make_engine = make_engine


if __name__ == "__main__":
    import os

    model_dir, data, output_dir = sys.argv[1:]
    _, seen = train_and_watch(model_dir, data, output_dir, evaluate_too=True)
    Path(output_dir, f"rank{os.environ['RANK']}.json").write_text(json.dumps(seen))

"""Two processes, one synthetic batch, a random 2.9M-parameter Llama:

  update:   seconds per policy update (two optimizer steps) with FSDP2 sharding (fsdp) or FSDP2
            replication (ddp); the hand-written per-parameter all-reduce that `sps` used before
            FSDP2 was timed with this script on the old code (results/fsdp_step.md).
  generate: seconds to sample 64 completions of 32 tokens per process, on the full weights
            gathered once (what the trainer does) and on sharded weights (an all-gather per layer
            per token; possible here only because both processes sample the same prompts with
            the same seed, so they stop together).

    torchrun --nproc_per_node 2 bench/fsdp_step.py --parallelism fsdp [--updates 5]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from sps.grading.base import Grade
from sps.models.tokenizer import build_char_tokenizer
from sps.rollout.base import Completion, SamplingParams
from sps.rollout.hf import HFEngine
from sps.tasks.problem import Problem
from sps.training.batch import collate
from sps.training.config import TrainConfig
from sps.training.distributed import gather_full_weights, init_world, parallelize, shard_for_training
from sps.training.rollouts import record_rollouts
from sps.training.sps_phase import Update
from sps.training.trainer import rl_part, run_update


def synthetic_rollouts(prompts: int, generations: int, length: int, vocab: int):
    """Random prompts and completions of varied length, with random rewards (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    prompt_ids = [torch.randint(3, vocab, (8,), generator=g).tolist() for _ in range(prompts)]
    groups = []
    for _ in range(prompts):
        group = []
        for _ in range(generations):
            n = int(torch.randint(length // 2, length + 1, (), generator=g))
            ids = torch.randint(3, vocab, (n,), generator=g).tolist()
            group.append(Completion(ids, "", (-torch.rand(n, generator=g) * 4).tolist(), "stop"))
        groups.append(group)
    rewards = (torch.rand(prompts, generations, generator=g) > 0.5).float()
    return prompt_ids, groups, rewards


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallelism", default="fsdp")
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = init_world("cpu")
    cfg = replace(TrainConfig(), num_generations=8, steps_per_generation=2, max_completion_length=32, learning_rate=1e-4)
    prompt_ids, groups, rewards = synthetic_rollouts(16, cfg.num_generations, cfg.max_completion_length, args.vocab)
    share = len(prompt_ids) // world.size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    model = parallelize(build_model(args), args.parallelism, "none", False, False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    batch = collate(prompt_ids[mine], groups[mine], 0)
    grades = [Grade(bool(r), "ok") for r in rewards[mine].flatten().tolist()]
    problems = [Problem(f"p{i}", "", "") for i in range(len(prompt_ids))][mine]
    rollouts = record_rollouts(world, problems, prompt_ids[mine], groups[mine], grades, batch, rewards[mine], rewards[mine] >= 1)
    times = []
    for update in range(args.updates + 1):  # the first is warm-up
        world.barrier()
        start = time.perf_counter()
        part = rl_part(cfg, world, None, rollouts, batch, 0, 1, 0.0, {})
        run_update(cfg, world, model, optimizer, [part], Update(("rl",), cfg.steps_per_generation, 1), seed=update)
        world.barrier()
        times.append(time.perf_counter() - start)
    tokenizer = build_char_tokenizer("".join(chr(0x100 + i) for i in range(args.vocab - 4)))
    engine = HFEngine(model, tokenizer)
    sampling = SamplingParams(max_new_tokens=32)
    generate_times = {}
    for weights in ("gathered", "sharded"):
        (gather_full_weights if weights == "gathered" else shard_for_training)(model)
        for repeat in range(2):  # the first is warm-up
            world.barrier()
            start = time.perf_counter()
            engine.generate(prompt_ids[:8], 8, sampling, seed=repeat)
            generate_times[weights] = time.perf_counter() - start
    if world.is_main:
        params = sum(p.numel() for p in build_model(args).parameters())
        timed = sorted(times[1:])
        print("| parallelism | processes | parameters | update, median | update, fastest | generate, gathered | generate, sharded |")
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {args.parallelism} | {world.size} | {params / 1e6:.1f}M | {timed[len(timed) // 2]:.3f} s | {min(timed):.3f} s "
            f"| {generate_times['gathered']:.2f} s | {generate_times['sharded']:.2f} s |"
        )


if __name__ == "__main__":
    main()

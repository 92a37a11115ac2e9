"""Run by test_distributed.py under a launcher: one RL update on this process's share of a saved
global batch; the main process saves the updated parameters."""

import sys

import torch

from sps.models.loading import load_policy
from sps.training.batch import collate
from sps.training.config import TrainConfig
from sps.training.distributed import init_world
from sps.training.trainer import rl_part, run_update


def main(model_dir: str, batch_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    world = init_world("cpu")
    saved = torch.load(batch_file, weights_only=False)
    cfg = TrainConfig(**saved["config"])
    prompts, groups, rewards = saved["prompt_ids"], saved["groups"], saved["rewards"]
    share = len(prompts) // world.size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    model, tokenizer = load_policy(model_dir, dtype="float32", device="cpu")
    batch = collate(prompts[mine], groups[mine], tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    part = rl_part(cfg, world, None, batch, rewards[mine], 0, 1, cfg.entropy_coef)
    run_update(cfg, world, model, optimizer, [part], cfg.steps_per_generation, cfg.num_iterations, seed=7)
    if world.is_main:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:4])

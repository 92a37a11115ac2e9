"""Run by test_distributed.py under torchrun: three optimizer steps of one RL update on this
process's share of a saved global batch, once per setting (FSDP2 sharded, replicated, gradient
checkpointing, bf16; CPU offload needs a GPU), each on an untied and a tied copy of the model. The main process
also takes the same update unsharded on the whole batch, as a plain `sps train` would (a world of
one), and saves the gradients of the first step and the parameters after the third of both."""

import sys

import torch

from sps.grading.base import Grade
from sps.models.loading import load_policy
from sps.models.lora import add_adapters
from sps.tasks.problem import Problem
from sps.training.batch import collate
from sps.training.config import TrainConfig
from sps.training.distributed import World, full_state_dict, init_world, parallelize
from sps.training.rollouts import record_rollouts
from sps.training.sps_phase import Update
from sps.training.trainer import rl_part, run_update

SETTINGS = {  # name: (parallelism, compute dtype, cpu_offload, gradient_checkpointing)
    "fsdp": ("fsdp", torch.float32, False, False),
    "ddp": ("ddp", torch.float32, False, False),
    "fsdp+checkpointing": ("fsdp", torch.float32, False, True),
    "fsdp+bf16": ("fsdp", torch.bfloat16, False, False),
}
LORA = "fsdp+lora"  # FSDP2 sharding a model whose only trainable weights are LoRA adapters


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that keeps the full gradients of its first step (a collective under FSDP2)."""

    def __init__(self, model, lr):
        super().__init__(model.parameters(), lr=lr)
        self.names = {p: name for name, p in model.named_parameters()}
        self.first_grads = None

    def step(self, closure=None):
        if self.first_grads is None:
            full = lambda g: g.full_tensor() if hasattr(g, "full_tensor") else g  # noqa: E731
            self.first_grads = {self.names[p]: full(p.grad).detach().clone() for p in self.names if p.grad is not None}
        return super().step(closure)


def update(model_dir, world, saved, sharding, lora: bool = False) -> dict:
    cfg = TrainConfig(**saved["config"])
    prompts, groups, rewards = saved["prompt_ids"], saved["groups"], saved["rewards"]
    share = len(prompts) // world.size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    model, tokenizer = load_policy(model_dir, dtype="float32", device="cpu")
    if lora:
        torch.manual_seed(0)  # the same adapters on every process and in the one-process run
        model = add_adapters(model, 4, 8.0, 0.0, ["q_proj", "v_proj"])
    if sharding is not None:
        model = parallelize(model, *sharding)
    optimizer = RecordingAdamW(model, cfg.learning_rate)
    batch = collate(prompts[mine], groups[mine], tokenizer.pad_token_id)
    problems = [Problem(f"p{i}", "", "") for i in range(len(prompts))][mine]
    grades = [Grade(bool(r), "ok") for r in rewards[mine].flatten().tolist()]
    rollouts = record_rollouts(world, problems, prompts[mine], groups[mine], grades, batch, rewards[mine], rewards[mine] >= 1)
    part = rl_part(cfg, world, None, rollouts, batch, 0, 1, cfg.entropy_coef, {})
    run_update(cfg, world, model, optimizer, [part], Update(("rl",), 3, 1), seed=7)
    return {"grads": optimizer.first_grads, "params": full_state_dict(model)}


def main(batch_file: str, out_file: str, *model_dirs: str) -> None:
    torch.set_num_threads(1)
    world = init_world("cpu")
    saved = torch.load(batch_file, weights_only=False)
    results = {}
    for model_dir in model_dirs:
        if world.is_main:
            results[(model_dir, "one process")] = update(model_dir, World(), saved, None)
        for name, sharding in SETTINGS.items():
            results[(model_dir, name)] = update(model_dir, world, saved, sharding)
        if world.is_main:
            results[(model_dir, "one process, lora")] = update(model_dir, World(), saved, None, lora=True)
        results[(model_dir, LORA)] = update(model_dir, world, saved, SETTINGS["fsdp"], lora=True)
    if world.is_main:
        torch.save(results, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])

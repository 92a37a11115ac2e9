"""Run by test_distributed.py under torchrun: three optimizer steps of one RL update on this
process's share of a saved global batch, once per setting (FSDP2 sharded, replicated, gradient
checkpointing, bf16; CPU offload needs a GPU), each on an untied and a tied copy of the model, and
sharded with LoRA adapters or with FlowRL's loss and log Z head. The main process also takes the
same update unsharded on the whole batch, as a plain `sps train` would (a world of one), and saves
the gradients of the first step and the parameters after the third of both."""

import sys
from dataclasses import replace

import torch

from sps.algorithms.flowrl import HEAD, attach_log_z_head
from sps.grading.base import Grade
from sps.models.loading import load_policy
from sps.models.lora import add_adapters
from sps.tasks.problem import Problem
from sps.training.batch import collate, policy_logprobs
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
FLOWRL = "fsdp+flowrl"  # FSDP2 sharding the policy with FlowRL's log Z head, a submodule called outside its forward


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


def update(model_dir, world, saved, sharding, variant: str = "") -> dict:
    """variant: "" (full fine-tuning with the saved config), "lora" or "flowrl"."""
    cfg = TrainConfig(**saved["config"])
    prompts, groups, rewards = saved["prompt_ids"], saved["groups"], saved["rewards"]
    share = len(prompts) // world.size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    model, tokenizer = load_policy(model_dir, dtype="float32", device="cpu")
    torch.manual_seed(0)  # the same adapters or log Z head on every process and in the one-process run
    reference = None
    if variant == "lora":
        model = add_adapters(model, 4, 8.0, 0.0, ["q_proj", "v_proj"])
    if variant == "flowrl":
        cfg = replace(cfg, loss_mode="flowrl")
        attach_log_z_head(model, cfg.policy_loss.flowrl_head_layers, None)
        for module in getattr(model, HEAD).modules():  # dropout draws differ between one and two processes
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        start = load_policy(model_dir, dtype="float32", device="cpu")[0]
        reference = lambda rows: policy_logprobs(start, rows, cfg.temperature)[0]  # noqa: E731
    if sharding is not None:
        model = parallelize(model, *sharding)
    optimizer = RecordingAdamW(model, cfg.learning_rate)
    batch = collate(prompts[mine], groups[mine], tokenizer.pad_token_id)
    problems = [Problem(f"p{i}", "", "") for i in range(len(prompts))][mine]
    grades = [Grade(bool(r), "ok") for r in rewards[mine].flatten().tolist()]
    rollouts = record_rollouts(world, problems, prompts[mine], groups[mine], grades, batch, rewards[mine], rewards[mine] >= 1)
    part = rl_part(cfg, world, reference, rollouts, batch, 0, 1, cfg.entropy_coef, {})
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
        for variant, name in (("lora", LORA), ("flowrl", FLOWRL)):
            if world.is_main:
                results[(model_dir, f"one process, {variant}")] = update(model_dir, World(), saved, None, variant)
            results[(model_dir, name)] = update(model_dir, world, saved, SETTINGS["fsdp"], variant)
    if world.is_main:
        torch.save(results, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])

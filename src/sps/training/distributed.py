"""Several processes: each samples and trains on its share of the prompts, and the model is
sharded (or replicated) across them with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Started by `torchrun` (or any launcher that sets RANK / WORLD_SIZE / MASTER_ADDR), the processes
join a process group and `parallelize` wraps each decoder layer and then the whole model. A plain
`sps train` is a world of one: the model stays a plain module and torch.distributed is never
touched; the training code is the same in both cases.

Gradients are summed across processes, not averaged (FSDP2's default): the loss weights already
divide by the global token and sequence counts, so the sum is the full-batch gradient.

Between updates the model holds its full weights on every process (`gather_full_weights`), so
sampling, scoring and evaluation run locally: a process may take a different number of forward
passes than the others (with sharded weights, every forward is a collective all-gather, and a
process that stopped sampling early would leave the others waiting forever). `shard_for_training`
frees the full weights again before an update. Taking a state dict reshards the model (FSDP2's
state-dict hooks), so code that takes one between updates (a checkpoint, a weight copy into
vLLM) calls `gather_full_weights` afterwards, on every process.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

PARALLELISMS = ("fsdp", "ddp")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all processes (in place, also returned)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max(self, value: int) -> int:
        """The largest of every process's `value`."""
        if self.size == 1:
            return value
        tensor = torch.tensor(value)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor)

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order (a list of one in a world of one)."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: str) -> World:
    """Join the process group when started by a launcher (WORLD_SIZE set, even to 1: then FSDP2's
    mixed precision and CPU offload work on a single GPU)."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)  # "cuda" then means this process's GPU
        # On GPUs, NCCL for CUDA tensors and gloo for the small CPU tensors (counts, flags) and
        # objects the trainer all-reduces and gathers, which NCCL cannot take.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank)


def parallelize(model, parallelism: str, compute_dtype: torch.dtype, cpu_offload: bool, gradient_checkpointing: bool):
    """Apply FSDP2 to a Hugging Face causal LM in place (each decoder layer, then the root) and
    return it; in a world of one, only gradient checkpointing and mixed precision.

    The model's weights are the fp32 master copy that AdamW updates; a compute_dtype of bfloat16
    (or float16) runs forward and backward in it: under FSDP2 by its mixed-precision policy
    (gradients reduced in fp32), in a world of one by autocast around the model's forward.
    parallelism "fsdp" shards parameters, gradients and optimizer state over all processes;
    "ddp" keeps a full copy on each and all-reduces the gradients (FSDP2 on a (processes, 1)
    mesh: replicated over the first dimension, "sharded" over a dimension of size 1), so both
    share one code path, state-dict and checkpoint format.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        FSDPModule,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mixed = compute_dtype != next(model.parameters()).dtype
    if not dist.is_initialized():
        if cpu_offload:
            raise ValueError(
                "cpu_offload comes from FSDP2, which needs a process group: "
                "start the run with torchrun (torchrun --nproc_per_node 1 -m sps.cli train ... on one GPU)"
            )
        return autocast_forward(model, compute_dtype) if mixed else model
    size = dist.get_world_size()
    device_type = next(model.parameters()).device.type
    if cpu_offload and device_type == "cpu":
        raise ValueError("cpu_offload moves a GPU run's weights and optimizer state to the CPU; this run is on the CPU already")
    if parallelism == "fsdp":
        mesh = init_device_mesh(device_type, (size,))
    else:
        mesh = init_device_mesh(device_type, (size, 1), mesh_dim_names=("replicate", "shard"))
    precision = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if mixed else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules); cannot shard it by layer")
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=precision, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=precision, offload_policy=offload)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # Sum, not average. Forcing SUM-type collectives (divided by 1) is also what gloo supports.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model


def autocast_forward(model, dtype: torch.dtype):
    """Run every forward of `model` (training, scoring, sampling) under autocast to `dtype`, its
    weights staying as they are (the fp32 master copy). Returns the model."""
    device_type = next(model.parameters()).device.type
    forward = model.forward

    @functools.wraps(forward)  # keeps the signature, which callers inspect (sps.rollout.prefix_cache.cache_argument)
    def forward_in_dtype(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return forward(*args, **kwargs)

    model.forward = forward_in_dtype
    return model


def fsdp_modules(model) -> list:
    """The model's FSDP2-wrapped submodules, the root last ([] for a plain module)."""
    from torch.distributed.fsdp import FSDPModule

    found = [m for m in model.modules() if isinstance(m, FSDPModule)]
    return [m for m in found if m is not model] + [m for m in found if m is model]


def gather_full_weights(model) -> None:
    """Give every process the full weights until `shard_for_training` (collective: every process
    calls it at the same point). Forward passes then need no communication."""
    modules = fsdp_modules(model)
    for module in modules:  # a state dict or an earlier update may have left some sharded
        module.reshard()
    for module in modules:
        module.unshard()
        if module is not model:  # FSDP2 never reshards the root after forward
            module.set_reshard_after_forward(False, recurse=False)


def shard_for_training(model) -> None:
    """Free the full weights: each layer is gathered for its forward and backward only."""
    for module in fsdp_modules(model):
        if module is not model:
            module.set_reshard_after_forward(True, recurse=False)
        module.reshard()


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The full weights (tied ones included) on CPU in the main process, {} in the others
    (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

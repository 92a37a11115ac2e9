"""One policy update: minibatches, micro-batches, clipping (FSDP2 sums the gradients across processes).

A loss is given as one or more `LossPart`s, each a batch of sequences with two functions:
  token_weights(rows) -> (b, T) weights that turn per-token losses into the minibatch loss
                         (all-zero for a row that cannot contribute, which then skips its forward);
  token_loss(forward, rows) -> ((b, t) per-token loss, {name: (b, t) statistic to average}),
                         where forward is the rows' PolicyForward (its logps (b, t), and the
                         entropy / top-k candidates when the part asks for them) and t <= T
                         (a micro-batch's padding is cut).
The RL step is one part, the IRL step another, and SPS's joint schedule passes both, so their
gradients add up before each optimizer step. Minibatches are drawn from a permutation of the
*global* batch and each process takes its own rows of each, so a run on several processes takes
exactly the optimizer steps of a run on one. Every process runs as many forward/backward passes
as the busiest one (a sharded model's passes are collectives), padding with passes of zero loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sps.training.batch import PolicyForward, RolloutBatch, policy_forward
from sps.training.config import TrainConfig
from sps.training.distributed import World, gather_full_weights, shard_for_training

# Rows per forward/backward when micro_batch_size is 0 (measured on the testbed, see bench/).
MICRO_BATCH_ROWS = 64


@dataclass
class LossPart:
    batch: RolloutBatch
    token_weights: Callable[[torch.Tensor], torch.Tensor]
    token_loss: Callable[[PolicyForward, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    needs_entropy: bool = False
    top_k: int = 0  # candidates per token the loss needs (SimKO)
    needs_log_z: bool = False  # the forward computes FlowRL's log Z(x) (the policy's log_z_head)
    stat_names: tuple[str, ...] = ()  # reported (as 0) even when no row needed a forward pass


def minibatch_partition(local_rows: int, world: World, num_minibatches: int, seed: int) -> list[torch.Tensor]:
    """Split a permutation of the global rows into minibatches; return this process's local row
    indices of each. Process r holds global rows r*B .. (r+1)*B - 1 (B = local_rows)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(local_rows * world.size, generator=generator)
    lo, hi = world.rank * local_rows, (world.rank + 1) * local_rows
    return [chunk[(chunk >= lo) & (chunk < hi)] - lo for chunk in order.tensor_split(num_minibatches)]


def microbatches(lengths: list[int], prompt_length: int, max_rows: int, max_tokens: int) -> list[slice]:
    """Split rows sorted by completion length (ascending) into consecutive micro-batches of at most
    max_rows rows (0: no limit) and, when max_tokens > 0, at most max_tokens padded tokens, a
    micro-batch costing rows x (prompt_length + its longest completion). A row over the budget on
    its own gets a micro-batch of its own. Returns the slices, in order."""
    groups, start = [], 0
    for end in range(1, len(lengths) + 1):
        rows = end - start
        too_many = (max_rows and rows > max_rows) or (max_tokens and rows > 1 and rows * (prompt_length + lengths[end - 1]) > max_tokens)
        if too_many:
            groups.append(slice(start, end - 1))
            start = end - 1
    if start < len(lengths):
        groups.append(slice(start, len(lengths)))
    return groups


def optimize(
    model,
    optimizer,
    world: World,
    parts: list[LossPart],
    cfg: TrainConfig,
    epochs: int,
    num_minibatches: int,
    seed: int,
) -> dict[str, float]:
    """epochs x num_minibatches optimizer steps over the parts; returns averaged statistics. cfg
    gives the temperature, micro-batching (micro_batch_size, max_tokens_per_microbatch), the LM
    head's chunk size and max_grad_norm.

    A minibatch whose loss or gradient is not finite takes no optimizer step and is counted in
    "nonfinite_updates".
    """
    temperature, chunk_size = cfg.temperature, cfg.logits_chunk_size
    max_rows = cfg.micro_batch_size or (0 if cfg.max_tokens_per_microbatch else MICRO_BATCH_ROWS)
    device = next(model.parameters()).device
    totals = {name: 0.0 for part in parts for name in part.stat_names}
    tokens = 0.0
    losses, grad_norms, nonfinite, broken = [], [], 0, False
    shard_for_training(model)
    model.train()
    torch.manual_seed(seed)  # dropout (LoRA's, FlowRL's log Z head) draws from the update's seed, so a resumed run repeats it
    for epoch in range(epochs):
        partitions = [
            minibatch_partition(part.batch.input_ids.shape[0], world, num_minibatches, seed + 1000 * epoch + i)
            for i, part in enumerate(parts)
        ]
        for m in range(num_minibatches):
            loss_sum = torch.zeros((), device=device)
            for part, partition in zip(parts, partitions):
                rows = partition[m]
                weights = part.token_weights(rows)
                keep = weights.abs().sum(-1) > 0
                rows, weights = rows[keep], weights[keep]
                # Micro-batches of similar lengths waste little compute on padding (the loss is a
                # sum over rows, so how rows are grouped does not change the gradient).
                lengths = part.batch.completion_mask[rows].sum(-1)
                by_length = lengths.argsort(stable=True)
                rows, weights = rows[by_length], weights[by_length]
                groups = microbatches(lengths[by_length].long().tolist(), part.batch.prompt_length, max_rows,
                                      cfg.max_tokens_per_microbatch)
                # Every process makes as many forward calls as the busiest (a sharded forward is a collective).
                for _ in range(world.max(len(groups)) - len(groups)):
                    zero_loss_pass(model, part.batch, temperature, chunk_size, part.needs_log_z)
                for group in groups:
                    micro = rows[group]
                    sub = part.batch.rows(micro)  # its padding is cut to its own longest completion
                    width = sub.completion_ids.shape[1]
                    forward = policy_forward(model, sub, temperature, part.needs_entropy, part.top_k, chunk_size, part.needs_log_z)
                    per_token, stats = part.token_loss(forward, micro)
                    loss = (weights[group, :width].to(device) * per_token).sum()
                    loss.backward()
                    loss_sum += loss.detach()
                    mask = sub.completion_mask.to(device)
                    for name, value in stats.items():
                        totals[name] = totals.get(name, 0.0) + float((value.float() * mask).sum())
                    tokens += float(mask.sum())
            loss_value = float(world.sum(loss_sum))
            grad_norm = gradient_norm(model, cfg.max_grad_norm)
            if math.isfinite(loss_value) and math.isfinite(grad_norm):
                optimizer.step()
                losses.append(loss_value)
                grad_norms.append(grad_norm)
                if not weights_finite(model, world):  # a finite gradient times a huge learning rate
                    broken = True
            else:
                nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
    gather_full_weights(model)  # for the sampling and scoring that follow
    result = {name: value / max(tokens, 1.0) for name, value in totals.items()}
    result["loss"] = sum(losses) / len(losses) if losses else float("nan")
    result["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    result["nonfinite_updates"] = nonfinite + broken
    result["nonfinite_weights"] = broken
    return result


def weights_finite(model, world: World) -> bool:
    """Whether every trainable weight is finite, on every process (each checks its own shard)."""
    local = all(bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()) for p in model.parameters() if p.requires_grad)
    return float(world.sum(torch.tensor(float(not local)))) == 0


def zero_loss_pass(model, batch: RolloutBatch, temperature: float, chunk_size: int = 0, with_log_z: bool = False) -> None:
    """A forward and backward pass that adds nothing to the gradients, so that this process takes
    part in the collectives of a pass that another process runs on real rows. It touches the
    weights that pass touches (with_log_z: FlowRL's log Z head too): FSDP2 reduces only the
    gradients a pass produced, and the processes' reductions must match."""
    forward = policy_forward(model, batch.rows(torch.arange(1)), temperature, chunk_size=chunk_size, with_log_z=with_log_z)
    zero = 0.0 * forward.logps.sum()
    if forward.log_z is not None:
        zero = zero + 0.0 * forward.log_z.sum()
    zero.backward()


def gradient_norm(model, max_norm: float) -> float:
    """The global gradient norm, clipping the gradients to max_norm when max_norm > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    # An infinite max_norm scales every gradient by exactly 1.
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

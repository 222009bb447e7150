"""Data-parallel training with ``torch.distributed`` alone: what the classifier does differently
when it runs as one of several workers of a trial (``--workers-per-trial N``).

Whoever starts the workers sets up the process group (Ray Train's TorchTrainer does, in
search/workers.py: gloo on CPUs, NCCL on GPUs); without one, every function here is the identity
and the classifier trains as a single process. Each worker holds the whole data set, draws the same
seeded batch order, and trains on its own stride of each batch (``shard``): the gradients DDP
averages are then those of the whole ``batch_size`` batch, so a configuration means the same at
any number of workers. Gradients are averaged by one all-reduce per step after every worker's
accumulation succeeded (``average_gradients``: why not DDP's hooks is said there).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "average_buffers",
    "average_gradients",
    "broadcast_parameters",
    "is_distributed",
    "rank",
    "shard",
    "sum_over_workers",
    "worst_outcome",
    "workers",
]

# Outcomes of one worker's gradient accumulation, worst last: all workers act on the worst.
OK, OUT_OF_MEMORY, DIVERGED = 0, 1, 2


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def workers() -> int:
    """Workers training this trial (1 without a process group)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def shard(index: torch.Tensor, rank: int, workers: int) -> torch.Tensor:
    """Worker ``rank``'s part of one batch's ``index``: every ``workers``-th position from ``rank``
    (sizes differ by at most one; together the parts are the batch)."""
    return index[rank::workers]


def _device(net_or_tensor) -> torch.device:
    if isinstance(net_or_tensor, torch.Tensor):
        return net_or_tensor.device
    return next(net_or_tensor.parameters()).device


def broadcast_parameters(net: nn.Module) -> None:
    """Worker 0's weights and buffers on every worker (they start alike whatever the seeding)."""
    if not is_distributed():
        return
    for tensor in list(net.parameters()) + list(net.buffers()):
        torch.distributed.broadcast(tensor.data, src=0)


def worst_outcome(outcome: int, device: torch.device) -> int:
    """The worst of every worker's ``outcome`` (OK < OUT_OF_MEMORY < DIVERGED), so that all workers
    retry a step together, or all stop, and none waits for the others in a collective."""
    if not is_distributed():
        return outcome
    value = torch.tensor([outcome], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return int(value.item())


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Every gradient averaged over the workers, as DistributedDataParallel would leave it.

    Done once per step, after every worker's accumulation succeeded, rather than by DDP's hooks
    inside each backward pass: a worker that runs out of memory midway and retries with a smaller
    micro-batch would otherwise leave the others waiting in an all-reduce it never joins."""
    if not is_distributed():
        return
    count = workers()
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad.div_(count)


def average_buffers(net: nn.Module) -> None:
    """BatchNorm's running statistics (float buffers) averaged over the workers, so that every
    worker evaluates, checkpoints and reports the same network."""
    if not is_distributed():
        return
    count = workers()
    for buffer in net.buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer)
            buffer.div_(count)


def sum_over_workers(*values: float, device: torch.device) -> list[float]:
    """Each value summed over all workers (the values themselves without a process group)."""
    if not is_distributed():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()

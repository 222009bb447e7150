"""What a model costs: its parameter count and its measured inference latency.

Both are reported by every trial (``params``, ``latency_ms``), so a multi-objective search
(``OBJECTIVES = "params"`` in a space file) can trade accuracy against size or speed.

Latency is measured, not estimated: the median wall time of a batch-1 forward pass in eval mode,
after warm-up passes, on the trial's device with its precision. On a laptop running several trials
at once it depends on what else runs: the median resists single outliers, not a busy machine.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, ContextManager

import torch
from torch import nn

__all__ = ["count_parameters", "measure_latency_ms"]


def count_parameters(net: nn.Module) -> int:
    """Every parameter of ``net``, trainable or frozen (a frozen backbone still runs at inference)."""
    return sum(parameter.numel() for parameter in net.parameters())


@torch.inference_mode()
def measure_latency_ms(
    net: nn.Module,
    example: torch.Tensor,
    runs: int = 20,
    warmup: int = 5,
    autocast: Callable[[], ContextManager] | None = None,
) -> float:
    """Median milliseconds of ``net(example)`` over ``runs`` passes, after ``warmup`` unmeasured ones.

    ``example`` is one normalised input batch on the model's device, usually a single image
    (batch 1: the latency a user serving one request sees). ``autocast`` is the trial's mixed
    precision context. The network is left in eval mode; training calls ``set_train_mode`` per epoch.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"`runs` is {runs} and `warmup` {warmup}, but must be runs >= 1 and warmup >= 0.")
    net.eval()
    context = autocast or contextlib.nullcontext
    cuda = example.device.type == "cuda"
    times = []
    for index in range(warmup + runs):
        if cuda:
            torch.cuda.synchronize(example.device)
        started = time.perf_counter()
        with context():
            net(example)
        if cuda:  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(example.device)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0

"""gpu_packing "auto": measure one training step per sampled configuration on a GPU, and set the
GPU share of every trial from the largest peak."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import ray

from search.prepare import PreparedRun
from search.settings import Settings
from search.spaces import dry_run

__all__ = ["gpu_share", "pack_gpus"]


def pack_gpus(prepared: PreparedRun, data, out: Callable[[str], None]) -> Settings:
    """gpu_packing "auto": measure one training step of every dry-run configuration on one GPU, and
    let as many trials share a GPU as the largest peak allows."""
    from trainables.classifier import trials_per_gpu

    settings = prepared.settings
    if ray.cluster_resources().get("GPU", 0) < 1:
        raise ValueError(
            "`gpu_packing` is 'auto', but the Ray cluster has no GPU to measure on: "
            "use gpu_packing 'fixed' (the default) on CPU-only clusters"
        )
    configs = dry_run(prepared.space, settings)
    peak, gpu_bytes = ray.get(_measure_on_gpu.remote(configs, data))
    per_gpu = trials_per_gpu(peak, gpu_bytes)
    fraction = gpu_share(per_gpu)
    out(
        f"gpu packing: one training step peaks at {peak / 2**30:.2f} GiB of {gpu_bytes / 2**30:.1f} GiB "
        f"(largest of {len(configs)} sampled configurations) -> {per_gpu} trials per GPU, "
        f"{fraction} GPU each"
    )
    return dataclasses.replace(settings, gpus_per_trial=fraction)


def gpu_share(trials_per_gpu: int) -> float:
    """The GPU fraction each of ``trials_per_gpu`` trials asks Ray for, rounded down to Ray's
    resource precision (1e-4) so that the shares never add up to more than one GPU."""
    return math.floor(10_000 / trials_per_gpu) / 10_000


@ray.remote(num_gpus=1)
def _measure_on_gpu(configs: list[dict], data) -> tuple[int, int]:
    import torch

    from trainables.classifier import measure_step_memory

    peak = max(measure_step_memory(config, data) for config in configs)
    return peak, torch.cuda.get_device_properties(0).total_memory

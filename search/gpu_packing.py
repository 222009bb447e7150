"""gpu_packing "auto": how many trials share one GPU, measured on that GPU before the search.

The configurations measured are the space's corners (every parameter at the top of its range,
so the largest batch, the widest and deepest network it can produce, and every parameter at the
bottom) and the dry run's random samples. Each is measured over a whole trial cycle (the data set
on the GPU, two training steps, validation and the latency pass: reserved memory, what a
neighbour cannot use; the trainable entry's ``measure_memory``), on one GPU that the measuring
task holds alone, where the CUDA context is measured too (the GPU's used memory less what the
allocator reserved). ``trainables.gpu.trials_per_gpu`` then divides the GPU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import ray

from search.config.sampling import dry_run, sample_space
from search.config.settings import Settings
from search.config.spaces import SpaceFile
from search.prepare import PreparedRun
from trainables import get_config_class, get_entry
from trainables.contract import TrialInfeasible

__all__ = ["corner_configs", "corner_value", "gpu_share", "pack_gpus"]


def pack_gpus(prepared: PreparedRun, data, out: Callable[[str], None]) -> Settings:
    """Measure a whole trial cycle of the space's corners and of every dry-run configuration on
    one GPU, and let as many trials share a GPU as the largest reserved peak and the measured
    CUDA context allow."""
    from trainables.gpu import trials_per_gpu  # imports torch: only when packing is measured

    settings = prepared.settings  # a cluster without a GPU was refused by ray_session.check_cluster_fits
    if get_entry(settings.trainable).measure_memory is None:
        raise ValueError(
            f"`gpu_packing` is 'auto', but trainable {settings.trainable!r} cannot measure its GPU memory: "
            "use --gpu-packing fixed with --gpus-per-trial"
        )
    corners, samples = corner_configs(prepared.space, settings), dry_run(prepared.space, settings)
    configs = corners + samples
    measured = ray.get(_measure_on_gpu.remote(configs, data, settings.trainable))
    peak, gpu_bytes, context = measured["peak"], measured["total"], measured["context"]
    per_gpu = trials_per_gpu(peak, gpu_bytes, context_bytes=context)
    fraction = gpu_share(per_gpu)
    out(
        f"gpu packing: a trial cycle peaks at {peak / 2**30:.2f} GiB reserved, plus a CUDA context of "
        f"{context / 2**20:.0f} MiB, of {gpu_bytes / 2**30:.1f} GiB on {measured['name']} (largest of "
        f"{len(configs)} configurations: the space's {len(corners)} corners and {len(samples)} samples"
        + (f"; {measured['infeasible']} did not fit alone" if measured["infeasible"] else "")
        + f") -> {per_gpu} trials per GPU, {fraction} GPU each"
    )
    return dataclasses.replace(settings, gpus_per_trial=fraction)


def gpu_share(trials_per_gpu: int) -> float:
    """The GPU fraction each of ``trials_per_gpu`` trials asks Ray for, rounded down to Ray's
    resource precision (1e-4) so that the shares never add up to more than one GPU."""
    return math.floor(10_000 / trials_per_gpu) / 10_000


def corner_configs(space: SpaceFile, settings: Settings) -> list[dict[str, Any]]:
    """The space's two corners: each parameter at its upper bound ("high": largest categorical
    number, last categorical choice otherwise), then at its lower bound. Conditional parameters
    follow from the values above them. A corner the trainable's config rejects is left out (the
    dry run has checked the space's random samples)."""
    config_class = get_config_class(settings.trainable)
    configs = []
    for high in (True, False):
        (corner,) = sample_space(space, _corner_sampler(high), 1)
        config = corner.config(settings)
        try:
            if config_class is not None:
                config_class.from_mapping(config)
        except (TypeError, ValueError):
            continue
        configs.append(config)
    return configs


def _corner_sampler(high: bool):
    """An Optuna sampler (the public BaseSampler API) that proposes one end of every distribution."""
    import optuna

    class CornerSampler(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, param_name, distribution):
            return corner_value(distribution, high)

    return CornerSampler()


def corner_value(distribution, high: bool) -> Any:
    """The top (``high``) or bottom of an Optuna distribution: its bound for numbers, its largest
    or smallest choice for numeric categoricals, its last or first choice for other categoricals."""
    import optuna.distributions as d

    if isinstance(distribution, (d.FloatDistribution, d.IntDistribution)):
        return distribution.high if high else distribution.low
    choices = list(distribution.choices)
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
    if numeric:
        return max(choices) if high else min(choices)
    return choices[-1] if high else choices[0]


@ray.remote(num_gpus=1)
def _measure_on_gpu(configs: list[dict], data, trainable: str) -> dict[str, Any]:
    """On one GPU held alone: the largest reserved peak over ``configs`` (bytes; the GPU's total
    where one does not fit at all), the GPU's total memory and the measured CUDA context."""
    import torch  # on the GPU worker only

    measure_step_memory = get_entry(trainable).resolve("measure_memory")
    torch.cuda.init()
    torch.zeros(1, device="cuda")  # the context and the allocator exist from here on
    free, total = torch.cuda.mem_get_info()
    context = max(0, total - free - torch.cuda.memory_reserved())
    peaks, infeasible = [], 0
    for config in configs:
        try:
            peaks.append(measure_step_memory(config, data))
        except (TrialInfeasible, torch.cuda.OutOfMemoryError):
            infeasible += 1
            torch.cuda.empty_cache()
            peaks.append(total)
    return {
        "peak": max(peaks),
        "total": total,
        "context": context,
        "infeasible": infeasible,
        "name": torch.cuda.get_device_name(),
    }

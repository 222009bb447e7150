"""Connecting to Ray: join a cluster or a running session, else start a local one."""

from __future__ import annotations

import math
import os

import ray

from search.settings import Settings

__all__ = ["check_cluster_fits", "connect", "fitting_trials"]

# Ray Tune's own console tables and TensorBoard logger would duplicate the progress lines and the
# TensorBoard files this engine writes; per-epoch checkpoints of short trials would trip its
# snapshot-frequency warning. The experiment state is snapshotted every second (Ray's default is
# 10 s) so that a driver killed with SIGKILL loses as little as possible. Users may override each.
_RAY_ENVIRONMENT = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
}


def connect(settings: Settings) -> bool:
    """Join ``settings.address`` or an already running session, else start a local one; True if started.

    A local session binds to 127.0.0.1 with the dashboard off: Ray has no authentication of its
    own on those ports, so nothing of it is reachable from other machines.
    """
    for key, value in _RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return False
    if settings.address:
        ray.init(address=settings.address, logging_level="warning", log_to_driver=False)
    else:
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            logging_level="warning",
            log_to_driver=False,
        )
    return True


def fitting_trials(settings: Settings) -> int:
    """How many trials the connected cluster's CPUs and GPUs run at once (concurrency 0)."""
    resources = ray.cluster_resources()
    workers = settings.workers_per_trial
    slots = math.floor(resources.get("CPU", 1) / (settings.cpus_per_trial * workers) + 1e-9)
    if settings.gpus_per_trial:
        slots = min(slots, math.floor(resources.get("GPU", 0) / (settings.gpus_per_trial * workers) + 1e-9))
    return max(1, min(settings.trials, slots))


def check_cluster_fits(settings: Settings, resources: dict, started_here: bool) -> None:
    """Refuse, before any trial starts, a search whose trials can never be placed: GPUs asked for
    on a cluster with none (unless it may still add them: a joined cluster with --concurrency
    set, as with an autoscaler), or one trial's workers needing more than the whole cluster."""
    gpus = resources.get("GPU", 0)
    if settings.gpus_per_trial and gpus < 1e-9 and (started_here or not settings.concurrency):
        where = "the local Ray session" if started_here else f"the Ray cluster at {settings.address!r}"
        raise ValueError(
            f"`gpus_per_trial` is {settings.gpus_per_trial}, but {where} has no GPU (Ray sees "
            f"{resources.get('CPU', 0):g} CPUs and 0 GPUs), so no trial could ever start: pass "
            "--gpus-per-trial 0 to train on CPUs; on an autoscaling cluster that adds GPU nodes "
            "for pending trials, also pass --concurrency N"
        )
    workers = settings.workers_per_trial
    needs = {"CPU": settings.cpus_per_trial * workers, "GPU": settings.gpus_per_trial * workers}
    for name, need in needs.items():
        have = resources.get(name, 0)
        if need > have + 1e-9 and (name == "CPU" or gpus > 0) and (started_here or not settings.concurrency):
            raise ValueError(
                f"one trial needs {need:g} {name}s ({workers} worker(s) x {need / workers:g}), but the Ray "
                f"cluster has {have:g}: lower --workers-per-trial or --{name.lower()}s-per-trial"
            )

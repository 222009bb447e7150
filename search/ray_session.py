"""Connecting to Ray: join a cluster or a running session, else start a local one."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import ray

from search import _adapter
from search.config.settings import Settings

__all__ = ["check_cluster_fits", "connect", "fitting_trials", "join", "set_ray_environment", "start_local", "token_path"]

# Ray Tune's own console tables and TensorBoard logger would duplicate the progress lines and the
# TensorBoard files this engine writes; per-epoch checkpoints of short trials would trip its
# snapshot-frequency warning. Ray's automatic period between experiment snapshots is kept, with a
# floor of 1 s instead of its 10 s (search/tuner.py: SNAPSHOT_FLOOR_S), so that a driver killed
# with SIGKILL loses as little as possible while snapshots stay a small share of the driver's time.
# A reused trial actor waits up to 2 s (Ray's default) for the previous trial's thread to end,
# else the next trial fails with "Trainable runner reuse requires reset_config()": on a loaded
# machine a stopped trial's thread took longer (seen after a resume, load average 40 on 2 cores),
# so it waits 60 s. Users may override each.
_RAY_ENVIRONMENT = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "auto",
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
}


def set_ray_environment() -> None:
    """Ray's and Ray Tune's environment settings this engine runs with (above), where the user has
    not set them; before ``ray.init``, so that a local session's workers inherit them."""
    for key, value in _RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def connect(settings: Settings) -> bool:
    """Join ``settings.address`` or an already running session, else start a local one; True if started.

    A local session listens on 127.0.0.1 only, with the dashboard off and token authentication on
    (``start_local``; tests/test_security.py lists its sockets).
    """
    set_ray_environment()
    if ray.is_initialized():
        return False
    if settings.address:
        join(settings.address, logging_level="warning", log_to_driver=False)
    else:
        start_local(logging_level="warning", log_to_driver=False)
    return True


LOOPBACK = "127.0.0.1"


def start_local(**options) -> None:
    """``ray.init`` a new local session whose servers all listen on 127.0.0.1 (``options``: ray.init's).

    Ray 2.60's servers (GCS, raylet, object manager, each worker's core-worker server, the agents)
    bind to the node IP when it is a loopback address, else to every interface; ``ray.init`` keeps
    a loopback node IP only in Ray's single-machine mode (``_adapter.single_machine_mode``), set
    while the session starts. Token authentication is switched on explicitly, whatever
    ``RAY_AUTH_MODE`` says: loopback keeps other machines out, the token other users' processes on
    this machine, so the token file Ray creates readable by all (0644) is made this user's only.
    """
    _adapter.enable_token_auth()
    with _adapter.single_machine_mode():
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, **options)
    _keep_token_private()
    node_ip = ray.util.get_node_ip_address()  # this session's node IP (public API)
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray session came up on {node_ip}, not {LOOPBACK}: this Ray version no longer "
            f"honours {_adapter.SINGLE_MACHINE_ENV}=0 (see search/_adapter.py)"
        )


def join(address: str, **options) -> None:
    """``ray.init(address)``; an address on 127.0.0.1 or localhost is joined there, not on the external IP."""
    loopback = address.rpartition(":")[0].strip("[]") in (LOOPBACK, "localhost", "::1")  # what Ray rewrites
    with _adapter.single_machine_mode() if loopback else contextlib.nullcontext():
        ray.init(address=address, **options)


def token_path() -> Path:
    """The token file Ray reads: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def _keep_token_private() -> None:
    path = token_path()
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # no token file (RAY_AUTH_TOKEN in the environment), or not ours to change


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
    if settings.gpu_packing == "auto" and gpus < 1:  # it measures on a GPU before any trial starts
        raise ValueError(
            "`gpu_packing` is 'auto', but the Ray cluster has no GPU to measure on: "
            "use gpu_packing 'fixed' (the default) on CPU-only clusters"
        )
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

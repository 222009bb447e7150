"""What runs inside a Ray worker for one trial: the trainable, its checkpoints, and the failures a
retry would only repeat."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray
from ray import tune

from analysis.records import trial_dir

__all__ = ["FINAL_ERROR", "INFEASIBLE", "REPLAYED", "trial_status_from_error"]

# A result key that marks a trial's end replayed from the run directory (see _ray_trial).
REPLAYED = "replayed_from_run_directory"

# Written into a trial's directory when its failure would repeat on retry (see _ray_trial).
FINAL_ERROR = "final_error.txt"

INFEASIBLE = "infeasible: out of memory"


class _RayCheckpoints:
    """The trainable's checkpoint store, backed by Ray Tune: each epoch's state rides its report."""

    def __init__(self) -> None:
        self._pending: dict | None = None

    def load(self) -> dict | None:
        import torch

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        self._pending = state

    def report(self, metrics: dict) -> None:
        import torch

        if self._pending is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="trial-checkpoint-") as directory:
            torch.save(self._pending, Path(directory) / "state.pt")
            self._pending = None
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _ray_trial(
    config: dict, data, defaults: dict, trainable_name: str, run_dir: str, finished: dict, gpus: float = 0.0
) -> None:
    from trainables import get_trainable, gpu
    from trainables.classifier import NOT_RETRIED

    trial_id = tune.get_context().get_trial_id()
    if trial_id in finished:
        # The run directory says this trial ended before the driver died, after Ray's last
        # snapshot: give Ray its recorded end instead of training it again.
        last, error = finished[trial_id]
        if error:
            raise RuntimeError(f"this trial failed before the run was interrupted: {error}")
        tune.report(last | {REPLAYED: True})
        return
    store = _RayCheckpoints()
    node_id = ray.get_runtime_context().get_node_id()
    # Ray retries every failed trial up to max_failures times; a failure that a retry would only
    # reproduce (divergence, out of memory at the smallest micro-batch) is remembered in the run
    # directory (shared storage) and re-raised at once instead of training again.
    final = trial_dir(Path(run_dir), tune.get_context().get_trial_id()) / FINAL_ERROR
    if final.exists():
        raise _RepeatedFailure(final.read_text().strip())

    def report(metrics: dict) -> None:
        store.report(metrics | {"node_id": node_id})  # which node ran each epoch

    try:
        gpu.cap_memory(gpus)  # the trial's share of its GPU, so that an OOM is its own
        get_trainable(trainable_name)(defaults | config, data, report, store)
    except NOT_RETRIED as error:
        final.parent.mkdir(parents=True, exist_ok=True)
        final.write_text(f"{type(error).__name__}: {error}\n")
        raise
    finally:
        gpu.release()  # a reused actor starts its next trial with no cached GPU memory


class _RepeatedFailure(RuntimeError):
    """A deterministic failure of an earlier attempt of this trial, not run again."""


def trial_status_from_error(error_line: str) -> str:
    """The status a failed trial gets from its error: out of memory at the smallest micro-batch
    is "infeasible: out of memory" (the configuration does not fit the GPU), anything else "error"."""
    return INFEASIBLE if INFEASIBLE in error_line else "error"

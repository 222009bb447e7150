"""What runs inside a Ray worker for one trial: the trainable, its checkpoints, and the failures a
retry would only repeat."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import ray
from ray import tune

from analysis.records import LINEAGE, TrialStatus, read_json, trial_dir, write_json
from search.config.settings import METRIC_MODES
from trainables.contract import INFEASIBLE, NOT_RETRIED
from trainables.names import did_you_mean

__all__ = [
    "FINAL_ERROR",
    "INFEASIBLE",
    "METRIC_NOT_REPORTED",
    "REPLAYED",
    "MetricNotReported",
    "RepeatedFailure",
    "check_first_report",
    "ray_trial",
    "remember_final_error",
    "replay_or_refuse",
    "trial_status_from_error",
]

# A result key that marks a trial's end replayed from the run directory (see ray_trial).
REPLAYED = "replayed_from_run_directory"

# Written into a trial's directory when its failure would repeat on retry (see ray_trial).
FINAL_ERROR = "final_error.txt"

# Begins the error of a trial whose first report lacks the search's metric. Every other trial
# would fail the same way, so the driver ends the whole search on it (search/recorder.py).
METRIC_NOT_REPORTED = "metric not reported"


class MetricNotReported(ValueError):
    """The trainable does not report the search's metric: a setting to fix, not a trial to retry."""


def check_first_report(metrics: dict, metric: str, trainable: str) -> None:
    """MetricNotReported, naming the keys that were reported, when ``metrics`` lacks ``metric``."""
    if metric in metrics:
        return
    reported = sorted(metrics)
    raise MetricNotReported(
        f"{METRIC_NOT_REPORTED}: the search's metric is {metric!r}, but the first report of trainable "
        f"{trainable!r} has no such key; it reported {reported}. Report {metric!r} from the trainable, or "
        f"set --metric (METRIC in the space file) to one of those keys, with --mode max or min for a name "
        f"outside {sorted(METRIC_MODES)}" + did_you_mean(metric, reported)
    )


def write_state(state: dict, directory: Path) -> None:
    """A trial's checkpoint state into ``directory``: state.json where the state is plain data that
    JSON gives back equal and this process never imported torch (so no tensor can be in it);
    else torch's state.pt. A trainable without torch (a replay) then checkpoints without loading
    torch into its actor, about 2 s of CPU and 400 MB each."""
    if "torch" not in sys.modules:
        try:
            text = json.dumps(state, allow_nan=False)
        except (TypeError, ValueError):  # not plain data: a numpy array, a set, a NaN
            text = None
        if text is not None and json.loads(text) == state:  # no tuple became a list, no key a string
            (directory / "state.json").write_text(text)
            return
    import torch  # the state holds tensors, or torch is loaded already

    torch.save(state, directory / "state.pt")


def read_state(directory: Path) -> dict:
    """The state ``write_state`` wrote into ``directory``."""
    path = directory / "state.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch  # a state.pt: tensors (or torch was loaded when it was saved)

    return torch.load(directory / "state.pt", map_location="cpu", weights_only=True)


class _RayCheckpoints:
    """The trainable's checkpoint store, backed by Ray Tune: each epoch's state rides its report.

    Each state carries its lineage: the trial that saved it and the configs that trained its
    weights (``schedule``). A state saved by another trial means PBT made this trial a clone: the
    lineage grows by this trial's (mutated) config and is written to the trial's lineage.json.
    """

    def __init__(self, trial_id: str = "", config: dict | None = None, directory: Path | None = None) -> None:
        self._pending: dict | None = None
        self.trial_id, self.directory = trial_id, directory
        self.config = dict(config or {})
        self.schedule = [{"from_epoch": 1, "config": self.config}]
        self.cloned: dict | None = None  # {"trial": parent, "epoch": its epoch}, reported once
        self.max_epochs = int(self.config.get("max_epochs", 0)) or float("inf")

    def load(self) -> dict | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            state = read_state(Path(directory))
        lineage = state.pop("lineage", None)
        if lineage is not None:
            self.schedule = list(lineage["schedule"])
            # PBT may clone at a trial's last epoch: the clone then trains no further epoch, and
            # its record stays its own.
            if lineage["trial_id"] != self.trial_id and state["epoch"] < self.max_epochs:
                self.cloned = {"trial": lineage["trial_id"], "epoch": state["epoch"]}
                self.schedule.append({"from_epoch": state["epoch"] + 1, "config": self.config})
                self._write_lineage()
        return state

    def save(self, state: dict) -> None:
        self._pending = state | {"lineage": {"trial_id": self.trial_id, "schedule": self.schedule}}

    def _write_lineage(self) -> None:
        if self.directory is None:
            return
        path = self.directory / LINEAGE
        clones = read_json(path)["clones"] if path.is_file() else []
        write_json(path, {"clones": [*clones, self.cloned], "schedule": self.schedule})

    def report(self, metrics: dict) -> None:
        if self.cloned is not None:  # the first report after PBT made this trial a clone
            metrics = metrics | {"cloned_from": self.cloned["trial"], "cloned_at_epoch": self.cloned["epoch"]}
            self.cloned = None
        if self._pending is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="trial-checkpoint-") as directory:
            write_state(self._pending, Path(directory))
            self._pending = None
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def ray_trial(
    config: dict,
    data,
    defaults: dict,
    trainable_name: str,
    run_dir: str,
    finished: dict,
    gpus: float = 0.0,
    metric: str = "val_acc",
) -> None:
    from trainables import get_trainable  # imported in the trial's own process

    trial_id = tune.get_context().get_trial_id()
    config = {key: value for key, value in config.items() if value is not None}  # see searcher._population
    replayed = replay_or_refuse(run_dir, trial_id, finished)
    if replayed is not None:
        tune.report(replayed)
        return
    store = _RayCheckpoints(trial_id, config, trial_dir(Path(run_dir), trial_id))
    store.max_epochs = int((defaults | config).get("max_epochs", 0)) or store.max_epochs
    node_id = ray.get_runtime_context().get_node_id()

    checked = []  # the first report is checked for the metric, before Ray (or ASHA) sees it

    def report(metrics: dict) -> None:
        if not checked:
            check_first_report(metrics, metric, trainable_name)
            checked.append(True)
        store.report(metrics | {"node_id": node_id})  # which node ran each epoch

    try:
        if gpus > 0:
            from trainables import gpu  # imports torch: only where a GPU is asked for

            gpu.cap_memory(gpus)  # the trial's share of its GPU, so that an OOM is its own
        get_trainable(trainable_name)(defaults | config, data, report, store)
    except (*NOT_RETRIED, MetricNotReported) as error:
        remember_final_error(run_dir, trial_id, error)
        raise
    finally:
        # A reused actor starts its next trial with no cached GPU memory. A process that never
        # imported torch holds none: a trainable without torch (a replay, a scikit-learn model)
        # then starts its actors without torch's import (about 2 s of CPU and 400 MB each, which
        # 32 actors starting at once on 2 cores paid in turn).
        if "torch" in sys.modules:
            from trainables import gpu  # torch is imported already: this costs nothing more

            gpu.release()


class RepeatedFailure(RuntimeError):
    """A deterministic failure of an earlier attempt of this trial, not run again."""


def replay_or_refuse(run_dir: str | Path, trial_id: str, finished: dict) -> dict | None:
    """The guard every trial (a plain one here, a multi-worker one in search/workers.py) runs before
    training: the recorded last result to hand Ray when the run directory says the trial ended
    before the driver died (after Ray's last snapshot), None to train.

    Raises RuntimeError for a trial recorded as failed then, and RepeatedFailure when an earlier
    attempt wrote a failure that a retry would only reproduce (``remember_final_error``): Ray
    retries every failed trial up to max_failures times, and these are re-raised at once."""
    if trial_id in finished:
        last, error = finished[trial_id]
        if error:
            raise RuntimeError(f"this trial failed before the run was interrupted: {error}")
        return last | {REPLAYED: True}
    final = trial_dir(Path(run_dir), trial_id) / FINAL_ERROR
    if final.exists():
        raise RepeatedFailure(final.read_text().strip())
    return None


def remember_final_error(run_dir: str | Path, trial_id: str, error: BaseException) -> None:
    """Record a failure a retry would only repeat (divergence, out of memory at the smallest
    micro-batch) in the run directory (shared storage), for ``replay_or_refuse``."""
    final = trial_dir(Path(run_dir), trial_id) / FINAL_ERROR
    final.parent.mkdir(parents=True, exist_ok=True)
    final.write_text(f"{type(error).__name__}: {error}\n")


def trial_status_from_error(error_line: str) -> str:
    """The status a failed trial gets from its error: out of memory at the smallest micro-batch
    is "infeasible: out of memory" (the configuration does not fit the GPU), anything else "error"."""
    return TrialStatus.INFEASIBLE.value if INFEASIBLE in error_line else TrialStatus.ERROR.value

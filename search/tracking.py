"""The engine's MLflow callback: Ray Tune's trial events forwarded to ``analysis.tracking``.

Added to the Tune callbacks after the run recorder (which writes status.json first), only when the
run has an MLflow URI (``--mlflow`` or ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from analysis.records import read_json, trial_dir
from analysis.tracking import SearchTracker
from search.progress import BestSoFar
from search.recorder import recorded_metrics

__all__ = ["MlflowCallback"]


class MlflowCallback(tune.Callback):
    """One MLflow run per trial, nested under the search's run (``analysis.tracking.SearchTracker``)."""

    def __init__(self, run_dir: Path, uri: str, metric: str, mode: str):
        self.run_dir, self.uri, self.metric, self.mode = Path(run_dir), uri, metric, mode
        self.tracker: SearchTracker | None = None
        self.best = BestSoFar(mode)

    def setup(self, **info):
        self.tracker = SearchTracker(self.run_dir, self.uri)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.tracker.trial_started(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.trial_result(trial.trial_id, recorded_metrics(result))
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            self.best.offer(value, trial.trial_id, result.get("epoch", 0))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial)

    def _ended(self, trial) -> None:
        path = trial_dir(self.run_dir, trial.trial_id) / "status.json"
        self.tracker.trial_ended(trial.trial_id, read_json(path) if path.is_file() else {})

    def on_experiment_end(self, trials, **info):
        best = {f"best_{self.metric}": self.best.value, "best_epoch": self.best.epoch}
        self.tracker.finish(best if self.best.value is not None else None)

"""The driver's record of a search: each trial's files in the run directory, its TensorBoard
events, and the progress lines. A Ray Tune callback, so it runs in the driver, never in a worker."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from ray import tune

from analysis.events import EventFile
from analysis.leaderboard import best_epoch
from analysis.records import RunDir, TrialStatus, append_metrics, read_trial, trial_dir, write_json
from analysis.study import LiveStudy
from search.config.settings import Settings
from search.config.spaces import trial_defaults
from search.progress import BestSoFar, Progress
from search.trial import FINAL_ERROR, INFEASIBLE, METRIC_NOT_REPORTED, REPLAYED, trial_status_from_error

__all__ = ["LIVE_STUDY_SHARE", "RunRecorder", "StopSearch", "clock"]

# Optuna's RDB storage spends about 25 ms of the driver's time on each trial added to
# RUN_DIR/study.db (measured here: one ORM round trip per parameter, attribute and value). With
# trials of a second or less that starved the trial slots, so the live study gets at most this
# share of the driver's time since the search began: ended trials queue, go in when the share
# allows, and the rest when the search ends. Trials of a minute or more go in as they end.
LIVE_STUDY_SHARE = 0.05


class RunRecorder(tune.Callback):
    """Runs in the driver: writes each trial's files and TensorBoard events, and prints progress."""

    def __init__(self, run_dir: Path, settings: Settings, out: Callable[[str], None], every_s: float | None = None):
        self.run_dir, self.settings, self.out, self.every_s = run_dir, settings, out, every_s
        self.defaults = trial_defaults(settings, threads=max(1, int(settings.cpus_per_trial)))
        self.started = time.monotonic()
        self.last_print = 0.0
        self.events: dict[str, EventFile] = {}  # TensorBoard's file of each running trial
        self.best = BestSoFar(settings.mode)
        self.finished: dict[str, str] = {}
        self.started_at: dict[str, str] = {}
        self.replayed: set[str] = set()
        self.retries: dict[str, int] = {}
        self.progress = Progress(out, every_s or settings.progress_every_s)
        self.live_study: Any = None  # analysis.study.LiveStudy, opened at the first ended trial
        # Ray Tune's stopper of the run: the recorder gives it a reason to end the whole search.
        self.stopper = StopSearch()
        self.live_queue: list[str] = []  # ended trials not yet in the live study, in order
        self.live_spent = 0.0  # seconds of the driver's time spent on the live study

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles the run config, callbacks included, into the Tuner's state, and a resume
        # replaces them with its own recorder (search/tuner.py: restore_tuner). The output callables
        # belong to this process and need not pickle: once a worker's log line is shown, Ray's driver
        # swaps builtins.print for tqdm_ray's safe_print, and the original print (a default ``out``)
        # then no longer pickles by reference. A second search in the same process failed on that.
        return self.__dict__ | {"out": None, "progress": None, "events": {}, "live_study": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        directory = trial_dir(self.run_dir, trial.trial_id)
        if (directory / "config.json").exists():  # restored after a failure: keep the first record
            self._status(trial, TrialStatus.RUNNING.value)
            return
        self._write_config(trial)
        # A new trial has reported nothing yet. Its ``last_result`` would be Ray's defaults, fetched
        # from the trial's actor with a blocking call (about 5% of the driver's samples on short
        # trials); where it runs is written at its end, from the epochs it reported.
        self._status(trial, TrialStatus.RUNNING.value, result={})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(REPLAYED):  # already recorded before an interruption
            self.replayed.add(trial.trial_id)
            return
        metrics = recorded_metrics(result) | {"recorded_at": time.time()}
        append_metrics(trial_dir(self.run_dir, trial.trial_id) / "metrics.jsonl", metrics)
        events = self._events(trial.trial_id)
        for key, value in metrics.items():
            if key.startswith(("train_", "val_")) or key in ("lr", "images_per_s"):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    events.scalar(key, value, step=metrics["epoch"])
        events.flush()
        value = result.get(self.settings.metric)
        if value is not None:
            self.best.offer(value, trial.trial_id, metrics["epoch"])
        self._progress(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.finished.get(trial.trial_id) == "error":  # failed for good, then ended by StopSearch
            return
        result = trial.last_result or {}
        epoch = result.get("epoch", 0)
        if result.get("diverged"):
            status = TrialStatus.DIVERGED.at_epoch(epoch)
        elif epoch >= trial.config.get("max_epochs", self.settings.max_epochs):  # a space may search it
            status = TrialStatus.COMPLETED.value
        else:
            status = TrialStatus.STOPPED.at_epoch(epoch)
        self._finish(trial, status, result.get("error", "") if result.get("diverged") else "")
        self._progress(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = self._keep_traceback(trial)
        self._stop_if_metric_missing(trial, error)
        status = trial_status_from_error(error)
        if status == INFEASIBLE:  # the message alone, without the exception's module path
            error = error[error.index(INFEASIBLE) :]
        self._finish(trial, status, error)
        self._progress(trials, force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        error = self._keep_traceback(trial)
        if self._stop_if_metric_missing(trial, error):
            # The search ends before Ray restarts the trial: this error is its end.
            self._finish(trial, "error", error)
            self._progress(trials, force=True)
            return
        if (trial_dir(self.run_dir, trial.trial_id) / FINAL_ERROR).exists():
            # A failure a retry would only repeat (the trial wrote it down in ray_trial). Ray has
            # already scheduled one restart, which re-raises at once; allow no more than that.
            trial.max_failures = 0
            return
        # Ray restarts the trial from its last checkpoint (FailureConfig.max_failures): not
        # finished, not an error (yet).
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        self._status(trial, "retrying", error=error)
        self.out(f"trial {trial.trial_id} failed ({error}); retry {self.retries[trial.trial_id]} from its last checkpoint")

    def _stop_if_metric_missing(self, trial, error: str) -> bool:
        """True for a trial whose first report lacked the metric (search/trial.py). Every trial
        would fail the same way, so the search ends (StopSearch) instead of failing them one by one."""
        final = trial_dir(self.run_dir, trial.trial_id) / FINAL_ERROR
        text = final.read_text() if final.exists() else error  # the whole message, not its last 300 characters
        if METRIC_NOT_REPORTED not in text:
            return False
        if self.stopper.reason is None:
            self.stopper.reason = f"trial {trial.trial_id}: " + text[text.index(METRIC_NOT_REPORTED) :].strip()
            self.out(f"stopping the search: {self.stopper.reason}")
        return True

    def _keep_traceback(self, trial) -> str:
        """Copy the trial's traceback into its record; return its last line."""
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).exists() else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours the actor's name
        if text:
            directory = trial_dir(self.run_dir, trial.trial_id)
            directory.mkdir(parents=True, exist_ok=True)  # a trial can fail before it started (its worker killed)
            with open(directory / "error.txt", "a") as file:
                file.write(text.rstrip() + "\n\n")
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return lines[-1][:300] if lines else "unknown error"

    def on_step_end(self, iteration, trials, **info):
        self._feed_live_study()
        self._progress(trials)

    def on_experiment_end(self, trials, **info):
        if self.stopper.reason is not None:
            # Ray ends the trials StopSearch stopped without a callback; their failure (they raised
            # the same error meanwhile) or the search's end is their record's end.
            for trial in trials:
                if trial.trial_id not in self.finished and (trial_dir(self.run_dir, trial.trial_id) / "status.json").exists():
                    final = trial_dir(self.run_dir, trial.trial_id) / FINAL_ERROR
                    error = final.read_text().strip() if final.exists() else f"ended when the search stopped: {self.stopper.reason}"
                    self._finish(trial, "error", error[:300])
        self._feed_live_study(everything=True)
        for events in self.events.values():
            events.close()
        self.progress.close()

    def _write_config(self, trial) -> None:
        params = {key: value for key, value in trial.config.items() if value is not None}  # strategies._population
        write_json(
            trial_dir(self.run_dir, trial.trial_id) / "config.json",
            {"trainable": self.settings.trainable, "config": self.defaults | params, "params": params},
        )

    def _finish(self, trial, status: str, error: str) -> None:
        if not (trial_dir(self.run_dir, trial.trial_id) / "config.json").exists():
            # Ended before its start was recorded (its worker killed, a reused actor's reset
            # failed): without its config the leaderboard would not list it, nor the study take it.
            self._write_config(trial)
        self.finished[trial.trial_id] = status
        self._status(trial, status, error=error)
        self.live_queue.append(trial.trial_id)
        self._feed_live_study()
        if trial.trial_id in self.replayed:
            return
        events, best = self._events(trial.trial_id), self._best_of(trial)
        events.hparams(trial.config, best)
        for key, value in best.items():
            events.scalar(key, value)
        events.close()
        self.events.pop(trial.trial_id, None)

    def _feed_live_study(self, everything: bool = False) -> None:
        """RUN_DIR/study.db gets the ended trials, for optuna-dashboard, within LIVE_STUDY_SHARE of
        the driver's time (``everything``: all that wait, at the search's end). A failure here is
        reported once and never stops the search (the report writes the study again at the end)."""

        if self.live_study is False:
            self.live_queue.clear()
            return
        began = time.monotonic()
        try:
            while self.live_queue and (
                everything or self.live_spent + time.monotonic() - began < LIVE_STUDY_SHARE * (began - self.started)
            ):
                if self.live_study is None:
                    self.live_study = LiveStudy(self.run_dir)
                self.live_study.add(read_trial(self.run_dir, self.live_queue.pop(0)))
        except Exception as error:  # noqa: BLE001 (monitoring only: the run's records stand)
            self.live_study = False
            self.live_queue.clear()
            self.out(f"live Optuna study disabled ({type(error).__name__}: {error}); `report` writes it at the end")
        finally:
            self.live_spent += time.monotonic() - began

    def _best_of(self, trial) -> dict[str, float]:
        # The run directory's reader: a torn last line is skipped, an epoch repeated after a
        # restore from a checkpoint counts once.
        record = RunDir(self.run_dir).trial(trial.trial_id)
        best = best_epoch(record, self.settings.metric, self.settings.mode) if record else None
        if best is None:
            return {}
        return {f"best_{self.settings.metric}": best[self.settings.metric], "epochs": float(len(record.metrics))}

    def _status(self, trial, status: str, error: str = "", result: dict | None = None) -> None:
        result = (trial.last_result or {}) if result is None else result
        write_json(
            trial_dir(self.run_dir, trial.trial_id) / "status.json",
            {
                "status": status,
                "error": error,
                "retries": self.retries.get(trial.trial_id, 0),  # restarts after worker or node failures
                "epochs": result.get("epoch", 0),
                "node_id": result.get("node_id", ""),
                "node_ip": result.get("node_ip", ""),
                "hostname": result.get("hostname", ""),
                "started_at": self._started_at(trial),
                "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            },
        )

    def _started_at(self, trial) -> str:
        if trial.trial_id not in self.started_at:
            # A trial restored by `resume` keeps the start its record already has.
            path = trial_dir(self.run_dir, trial.trial_id) / "status.json"
            recorded = json.loads(path.read_text()).get("started_at") if path.exists() else None
            self.started_at[trial.trial_id] = recorded or dt.datetime.now(dt.timezone.utc).isoformat()
        return self.started_at[trial.trial_id]

    def _events(self, trial_id: str) -> EventFile:
        if trial_id not in self.events:
            self.events[trial_id] = EventFile(trial_dir(self.run_dir, trial_id))
        return self.events[trial_id]

    def _progress(self, trials, force: bool = False) -> None:
        # search.progress decides when to show: a bar on a terminal, else a line every every_s
        # seconds and one at the end, however fast trials finish (``force`` is only a hint now).
        if not self.progress.due(len(self.finished), self.settings.trials):
            return
        now = time.monotonic()
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in self.finished)
        stopped = sum(1 for s in self.finished.values() if TrialStatus.of(s) is TrialStatus.STOPPED)
        errors = sum(1 for s in self.finished.values() if TrialStatus.of(s).is_failed())
        pending = self.settings.trials - len(self.finished) - running
        best = (
            f"best {self.settings.metric} {self.best.value:.4f} (trial {self.best.trial_id}, epoch {self.best.epoch})"
            if self.best.value is not None
            else "no result yet"
        )
        self.progress.update(
            len(self.finished),
            self.settings.trials,
            f"[{clock(now - self.started)}] {len(self.finished)}/{self.settings.trials} finished "
            f"({stopped} stopped early, {errors} errors), {running} running, {pending} pending | {best}",
            summary=f"{running} running, {errors} errors | {best}",
        )


class StopSearch(tune.Stopper):
    """Ray Tune's stopper of a run: no trial on its own; the whole search once ``reason`` is set
    (by the run's recorder). Plain data, since Ray pickles it into every experiment snapshot."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.reason is not None


# What Ray adds to every result on its own; of these only where the epoch ran is kept. Everything
# else a trainable reports (plain numbers, flags and strings) goes into metrics.jsonl as it is, so a
# trainable's new metric needs no change here.
_RAY_RESULT_KEYS = frozenset(
    {"training_iteration", "time_total_s", "episodes_total", "timesteps_total", "time_this_iter_s",
     "timestamp", "date", "time_since_restore", "timesteps_since_restore", "iterations_since_restore",
     "config", "checkpoint_dir_name", "done", "trial_id", "experiment_tag", "should_checkpoint", REPLAYED}
)  # fmt: skip


def recorded_metrics(result: dict) -> dict:
    """What the trainable reported in a Ray result: its own keys, without Ray's and without
    non-scalar values (metrics.jsonl's and MLflow's metrics)."""
    return {
        k: v
        for k, v in result.items()
        if k not in _RAY_RESULT_KEYS and not k.startswith("_") and isinstance(v, (bool, int, float, str))
    }


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:d}:{seconds:02d}"

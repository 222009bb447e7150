"""Ray Tune's Tuner for a run: assembled for a new search, restored to resume one, and a further
experiment in the same run directory to extend one."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from analysis.records import RunDir, TrialStatus, read_json_lines, read_trials
from analysis.study import frozen_trials, study_directions
from search import _adapter
from search.config.settings import Settings
from search.config.spaces import SpaceFile, trial_defaults
from search.ray_session import fitting_trials
from search.recorder import RunRecorder
from search.strategies.schedulers import SCHEDULERS
from search.strategies.searcher import (
    STUDY,
    avoided_repeats,
    build_scheduler,
    exhausted_because,
    search_and_space,
)
from search.tracking import MlflowCallback
from search.trial import MetricNotReported, ray_trial
from search.workers import TRIAL_ACTOR_RESOURCES, workers_trainable

__all__ = [
    "EXPERIMENT",
    "build_tuner",
    "end_of_space",
    "ended_trials",
    "experiments",
    "extend",
    "fit",
    "restore_tuner",
    "restore_snapshot_checkpoints",
    "set_aside_unknown_trials",
    "snapshot_trial_ids",
    "warm_started_storage",
]

# Ray's experiment folder inside the run directory; an extension adds "<EXPERIMENT>-extend-N".
EXPERIMENT = "ray"
# Ray snapshots the experiment every SNAPSHOT_FLOOR_S while a snapshot is cheap, then less often,
# so that snapshots take about SNAPSHOT_SHARE of the driver's time (Ray's own share; its floor is 10 s).
SNAPSHOT_FLOOR_S, SNAPSHOT_SHARE = 1.0, 0.05


def build_tuner(settings, space, data, recorder, name: str, trials: int, concurrency: int, storage=None):
    search_alg, param_space = search_and_space(space, settings, concurrency, storage=storage)
    return tune.Tuner(
        _tuner_trainable(settings, data, recorder.run_dir),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=build_scheduler(settings, space),
            num_samples=trials,
            # A multi-worker trial's Train workers belong to its Tune actor: stopping the trial
            # must end that actor, so that they end with it.
            reuse_actors=settings.workers_per_trial == 1,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(recorder.run_dir),
            callbacks=_callbacks(recorder),
            stop=recorder.stopper,
            # A multi-worker trial is a class trainable (search/workers.py): Tune saves it every epoch.
            # PBT clones other trials' checkpoints: Ray would delete one while it is copied; keep all.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2 if SCHEDULERS[settings.scheduler].takes_searcher else None,
                checkpoint_frequency=int(settings.workers_per_trial > 1),
            ),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            verbose=0,
        ),
    )


def experiments(run_dir: Path) -> list[Path]:
    """Ray's experiment folders in ``run_dir``: the search's, then each extension's."""
    # Not "ray*": a multi-worker run's Ray Train folder (ray_train) sorted last and was taken for the
    # experiment, so such a run could not be resumed.
    extensions = [p for p in run_dir.glob(EXPERIMENT + "-extend-*") if p.is_dir() and p.name.rpartition("-")[2].isdigit()]
    first = [run_dir / EXPERIMENT] if (run_dir / EXPERIMENT).is_dir() else []
    return first + sorted(extensions, key=lambda p: int(p.name.rpartition("-")[2]))


def restore_tuner(experiment: Path, settings: Settings, data, run_dir: Path, recorder: RunRecorder):
    """Ray's Tuner for ``experiment`` as it was interrupted, calling this process's ``recorder``."""
    tuner = tune.Tuner.restore(
        str(experiment),
        trainable=_tuner_trainable(settings, data, run_dir, ended_trials(run_dir)),
        resume_unfinished=True,
        resume_errored=False,
    )
    # The run config, callbacks and stopper included, comes back from the pickled tuner state:
    # replace them so that this process's recorder and output are the ones used.
    _adapter.replace_callbacks(tuner, _callbacks(recorder))
    _adapter.replace_stopper(tuner, recorder.stopper)
    return tuner


def fit(tuner, recorder: RunRecorder) -> None:
    """``tuner.fit()``; then, when the recorder stopped the search (a metric the trainable does not
    report), MetricNotReported with its reason."""
    settings = recorder.settings
    room = fitting_trials(settings)  # trial actors the cluster has room for at once
    with (
        _adapter.snapshot_period(SNAPSHOT_FLOOR_S, SNAPSHOT_SHARE),
        _adapter.trial_actor_pool(min(settings.concurrency or room, room)),
        _adapter.trainable_lookups_kept(),
    ):
        tuner.fit()
    if recorder.stopper.reason is not None:
        raise MetricNotReported(f"the search stopped before its budget: {recorder.stopper.reason}")


def extend(run_dir: Path, space: SpaceFile, settings: Settings, data, trials: int, out) -> tuple[Settings, int]:
    """Run ``trials - settings.trials`` more trials, the sampler warm-started from every finished one;
    return the settings and how many repeated proposals the searcher asked again."""
    extra = trials - settings.trials
    settings = dataclasses.replace(settings, trials=trials)
    RunDir(run_dir).write_settings(settings)
    records = read_trials(run_dir)
    concurrency = settings.concurrency or fitting_trials(settings)
    out(f"extending {settings.name} by {extra} trials; the sampler starts from {len(records)} finished trials")
    recorder = RunRecorder(run_dir, settings, out)
    recorder.finished = {r.trial_id: r.status.get("status", "") for r in records}
    storage = warm_started_storage(run_dir, settings)
    name = f"{EXPERIMENT}-extend-{len(list(run_dir.glob(EXPERIMENT + '-extend-*'))) + 1}"
    tuner = build_tuner(settings, space, data, recorder, name, extra, concurrency, storage=storage)
    fit(tuner, recorder)
    return end_of_space(run_dir, settings, tuner, out), avoided_repeats(_adapter.restored_search_alg(tuner))


def end_of_space(run_dir: Path, settings: Settings, tuner, out) -> Settings:
    """After ``tuner.fit()``: when the searcher stopped before the budget because no untried
    configuration was left (``repeats = "avoid"``), say so and record the trials run as the budget,
    so that the run reads as finished (not interrupted)."""
    why = exhausted_because(_adapter.restored_search_alg(tuner))
    if not why:
        return settings
    ran = len(read_trials(run_dir))
    out(
        f"the search stopped after {ran} of its budget of {settings.trials} trials: {why}; settings.json "
        "records the budget as the trials run (--repeats allow trains configurations again)"
    )
    settings = dataclasses.replace(settings, trials=ran)
    RunDir(run_dir).write_settings(settings)
    return settings


def warm_started_storage(run_dir: Path, settings: Settings) -> Any:
    """An in-memory Optuna storage whose study holds every recorded trial of the run.

    ``analysis.study.frozen_trials`` replays each trial's parameters through the run's space file,
    which gives Optuna their exact distributions, conditional parameters included.
    """
    import optuna

    storage = optuna.storages.InMemoryStorage()
    # One direction per value frozen_trials gives: the metric's, then each objective's.
    directions = study_directions(settings.as_record())
    study = optuna.create_study(storage=storage, study_name=STUDY, directions=directions)
    study.add_trials(frozen_trials(run_dir)[0])
    return storage


def ended_trials(run_dir: Path) -> dict[str, tuple[dict, str]]:
    """Trials the run directory records as ended: {trial_id: (last result, error line or "")}."""
    ended = {}
    for record in read_trials(run_dir):
        status = TrialStatus.of(record.status.get("status", ""))
        if status.is_failed():
            ended[record.trial_id] = ({}, record.status.get("error") or status.value)
        elif status.is_ended() and record.metrics:
            ended[record.trial_id] = (record.metrics[-1], "")
    return ended


def _snapshot_entries(experiment: Path) -> list[tuple[dict, dict]]:
    """(trial state, run metadata) of each trial in Ray's latest experiment snapshot of ``experiment``."""
    snapshots = sorted(experiment.glob("experiment_state-*.json"))
    if not snapshots:
        return []
    state = json.loads(snapshots[-1].read_text())
    return [(json.loads(entry[0]), json.loads(entry[1])) for entry in state.get("trial_data", [])]


def snapshot_trial_ids(experiment: Path) -> set[str]:
    """Trial ids in Ray's latest experiment snapshot of ``experiment``."""
    return {trial["trial_id"] for trial, _ in _snapshot_entries(experiment)}


def restore_snapshot_checkpoints(experiment: Path) -> list[str]:
    """Put back each unfinished trial's checkpoint that Ray's latest snapshot names but that is gone;
    return one line per trial so restored.

    Ray snapshots the experiment about once a second (less often in a long search), but keeps
    only a trial's two newest checkpoints (``num_to_keep``) and deletes the older ones as new ones
    arrive. A driver killed more than two checkpoints after a snapshot leaves that snapshot naming
    a deleted checkpoint, and Ray's restore then fails the trial ("Could not recover from checkpoint as it does not exist
    on storage anymore") on every retry. The trial's newest complete checkpoint (the last one its
    ``result.json`` names: Ray logs a result only once its checkpoint is on storage) is copied
    under the missing name; where ``result.json`` names none still there, the second newest
    checkpoint on storage later than the missing one (or the only one). A trainable's state
    carries its epoch, so the trial goes on from there, later than the snapshot, and trains no
    epoch twice that it need not.
    """
    restored = []
    for trial, metadata in _snapshot_entries(experiment):
        if trial.get("status") == "TERMINATED":
            continue
        named = (metadata.get("last_result") or {}).get("checkpoint_dir_name")
        trial_path = experiment / trial.get("relative_logdir", trial["trial_id"])
        if not named or (trial_path / named).exists():
            continue
        reported = [result.get("checkpoint_dir_name") for result in read_json_lines(trial_path / "result.json")]
        newest = next((name for name in reversed(reported) if name and (trial_path / name).is_dir()), None)
        if newest is None:
            # result.json can lag behind the checkpoints on storage (seen under load: it named
            # checkpoints up to 7, all deleted, while 8, 9 and 10 were there). The worker writes
            # each checkpoint before it starts the next, so all but the newest are whole.
            later = sorted(path.name for path in trial_path.glob("checkpoint_*") if path.is_dir() and path.name > named)
            newest = later[max(0, len(later) - 2)] if later else None
        if newest is None:
            continue  # nothing to go on from: Ray's restore fails the trial, as without this
        shutil.copytree(trial_path / newest, trial_path / named)
        restored.append(
            f"trial {trial['trial_id']}: Ray's last snapshot names {named}, deleted after it; the trial "
            f"goes on from its newest checkpoint, {newest}"
        )
    return restored


def set_aside_unknown_trials(run_dir: Path, known: set[str]) -> list[str]:
    """Move records of trials Ray does not know (begun after its last snapshot) out of trials/.

    The restored searcher proposes their slots again, so keeping them would add leaderboard rows
    beyond the budget.
    """
    lost = []
    for directory in sorted((run_dir / "trials").glob("*/")):
        if directory.name not in known:
            target = run_dir / "trials_lost" / directory.name
            target.parent.mkdir(exist_ok=True)
            directory.rename(target)
            lost.append(directory.name)
    return lost


def _tuner_trainable(settings: Settings, data, run_dir: Path, finished: dict | None = None) -> Any:
    defaults = trial_defaults(settings, threads=max(1, int(settings.cpus_per_trial)))
    if settings.workers_per_trial > 1:  # Ray Train workers hold the trial's resources, Tune's actor none

        trainable = workers_trainable(
            data, defaults, settings.trainable, str(run_dir), finished or {},
            settings.workers_per_trial, settings.cpus_per_trial, settings.gpus_per_trial, settings.metric,
        )  # fmt: skip
        return tune.with_resources(trainable, TRIAL_ACTOR_RESOURCES)
    return tune.with_resources(
        tune.with_parameters(
            ray_trial,
            data=data,
            defaults=defaults,
            trainable_name=settings.trainable,
            run_dir=str(run_dir),
            finished=finished or {},
            gpus=settings.gpus_per_trial,
            metric=settings.metric,
        ),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )


def _callbacks(recorder: RunRecorder) -> list:
    # Ray's own per-trial JSON/CSV results beside ours, without its TensorBoard logger.
    callbacks = [recorder, JsonLoggerCallback(), CSVLoggerCallback()]
    if recorder.settings.mlflow:  # after the recorder, which writes each trial's status first

        settings = recorder.settings
        callbacks.append(MlflowCallback(recorder.run_dir, settings.mlflow, settings.metric, settings.mode))
    return callbacks


def _trial_dirname(trial) -> str:
    return trial.trial_id

"""The engine: the one module that imports Ray.

``run_search(space, settings)`` validates everything it can without Ray (space file, settings,
model and weights, data set), writes the run directory, then runs the trials with Ray Tune:
OptunaSearch (define-by-run, seeded TPE) behind a concurrency limit, ASHA stopping on the
``epoch`` attribute, one checkpoint per epoch. A driver-side callback records every trial's
config, metrics and status into the run directory and TensorBoard, so analysis never needs Ray.

A trial whose worker or node is lost restarts from its last checkpoint on any node, up to
``max_failures`` times; a failure that would only repeat (divergence, out of memory at the
smallest micro-batch) is not retried. ``gpu_packing="auto"`` measures one training step per
sampled configuration on a GPU and sets the GPU share of every trial from the largest peak.

With ``objectives`` (e.g. "params"), the search is multi-objective: OptunaSearch's study gets one
direction per objective, each finished trial's last result gives Optuna its values (TPE or NSGA-II
then aim at the Pareto front), while ASHA still stops trials on the metric alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.optuna import OptunaSearch

from analysis.leaderboard import format_table, write_leaderboard
from analysis.records import append_metrics, trial_dir, write_json, write_text
from analysis.tracking import check_tracking_uri, tracking_uri
from search.progress import Progress
from search.settings import Settings
from search.spaces import SpaceFile, SpaceFunction, dry_run, load_space, trial_defaults

__all__ = [
    "PreparedRun",
    "execute_run",
    "gpu_share",
    "prepare_run",
    "read_settings",
    "resume_run",
    "run_search",
    "trial_status_from_error",
]

_PACKAGES = ("torch", "torchvision", "timm", "ray", "optuna", "numpy", "pandas", "scikit-learn", "tensorboard")


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A validated run, not yet written: what ``prepare_run`` checked and loaded."""

    run_dir: Path
    settings: Settings
    space: SpaceFile
    images: Any  # trainables.data.ImageSet
    split: Any  # trainables.data.Split


def prepare_run(
    space: SpaceFile, settings: Settings, out: Callable[[str], None] = print, overwrite: bool = False
) -> PreparedRun:
    """Everything that can fail on bad input, before anything is written or Ray starts.

    Resolves MODEL "auto", samples the space dry, loads and splits the data set, fetches ImageNet
    weights once. Raises ValueError/TypeError/FileExistsError naming what is wrong.
    """
    from trainables.data import load_dataset, split_indices
    from trainables.models import build_model, resolve_auto_model

    if settings.model == "auto":
        model, weights, why = resolve_auto_model()
        out(f"model auto -> {model} with {weights} weights ({why})")
        settings = dataclasses.replace(settings, model=model, weights=weights)
    dry_run(space, settings)
    _check_address(settings.address)
    uri = tracking_uri(settings.mlflow)  # --mlflow, else MLFLOW_TRACKING_URI
    if uri:
        check_tracking_uri(uri)
        settings = dataclasses.replace(settings, mlflow=uri)

    name = settings.name or f"{space.path.stem}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    run_dir = Path(settings.storage).expanduser().resolve() / name
    if run_dir.exists() and not overwrite:
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already exists: continue it with `python -m search resume "
            f"{run_dir}`, choose another --name, or pass --overwrite to start it over"
        )
    settings = dataclasses.replace(settings, name=name)

    images = load_dataset(settings.dataset, settings.image_size)
    split = split_indices(
        images.labels,
        settings.val_fraction,
        settings.test_fraction,
        settings.seed,
        data_fraction=settings.data_fraction,
        fixed_test=images.fixed_test,
    )
    if settings.weights == "imagenet":
        build_model(settings.model, len(images.classes), weights="imagenet")  # download once, here
    return PreparedRun(run_dir=run_dir, settings=settings, space=space, images=images, split=split)


def _write_run_dir(prepared: PreparedRun, out: Callable[[str], None]) -> None:
    run_dir, settings, images, split = prepared.run_dir, prepared.settings, prepared.images, prepared.split
    if run_dir.exists():  # prepare_run allowed it: --overwrite
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_json(run_dir / "settings.json", settings.to_dict() | {"mode": settings.mode})
    write_text(run_dir / "space.py", prepared.space.text)
    write_json(
        run_dir / "split.json",
        {
            "dataset": settings.dataset,
            "image_size": settings.image_size,
            "seed": settings.seed,
            "classes": list(images.classes),
            "skipped_files": list(images.skipped),
            "train": split.train,
            "val": split.val,
            "test": split.test,
        },
    )
    write_json(run_dir / "environment.json", _environment())
    out(
        f"data: {settings.dataset}, {len(images.classes)} classes, {len(split.train)} train / "
        f"{len(split.val)} validation / {len(split.test)} test images (test held out from every trial)"
    )


def run_search(space: SpaceFile, settings: Settings, out: Callable[[str], None] = print) -> Path:
    """Validate, then run the whole search; return the run directory."""
    return execute_run(prepare_run(space, settings, out), out)


def execute_run(prepared: PreparedRun, out: Callable[[str], None] = print) -> Path:
    """Write the run directory and run the trials. Joins a running Ray session if there is one."""
    from trainables.data import trial_data

    data = trial_data(prepared.images, prepared.split)
    started_ray = _connect(prepared.settings)
    try:
        if prepared.settings.gpu_packing == "auto":
            # Measured before the run directory is written, so settings.json holds the GPU share used.
            prepared = dataclasses.replace(prepared, settings=_pack_gpus(prepared, data, out))
        _write_run_dir(prepared, out)
        settings, run_dir, space = prepared.settings, prepared.run_dir, prepared.space
        concurrency = settings.concurrency or _fitting_trials(settings)
        out(
            f"run {settings.name}: {settings.trials} trials, up to {concurrency} at once, "
            f"<= {settings.max_epochs} epochs each, metric {settings.metric} ({settings.mode})"
        )
        recorder = _RunRecorder(run_dir, settings, out)
        _tuner(settings, space, data, recorder, _EXPERIMENT, settings.trials, concurrency).fit()
    finally:
        if started_ray:
            ray.shutdown()
    return _finish(run_dir, settings, recorder, out)


def resume_run(
    run_dir: Path, trials: int | None = None, address: str | None = None, out: Callable[[str], None] = print
) -> Path:
    """Continue an interrupted run, then, if ``trials`` exceeds its budget, extend it.

    Finished trials are not run again; trials that were running continue from their latest
    checkpoint; Ray restores the OptunaSearch searcher (with its TPE sampler and study) and the
    ASHA scheduler from the experiment state. Extending starts a further experiment in the same
    run directory whose sampler is warm-started with every finished trial.
    """
    from analysis.rerun import load_trial_data

    run_dir = Path(run_dir).expanduser().resolve()
    settings = read_settings(run_dir)
    if address is not None:
        settings = dataclasses.replace(settings, address=address)
    if trials is not None and trials < settings.trials:
        raise ValueError(
            f"--trials is {trials}, but must be >= the run's budget of {settings.trials} trials "
            "(resume finishes the budgeted trials; a larger number extends the search)"
        )
    space = load_space(run_dir / "space.py")
    experiments = sorted(p for p in run_dir.glob(_EXPERIMENT + "*") if p.is_dir())
    if not experiments or not tune.Tuner.can_restore(str(experiments[-1])):
        raise ValueError(
            f"run directory {str(run_dir)!r} holds no Ray experiment state to resume (it stopped before "
            "its first trial): start it again with `python -m search run`"
        )
    experiment = experiments[-1]
    _check_address(settings.address)
    data = load_trial_data(run_dir)
    known = set().union(*(_snapshot_trial_ids(e) for e in experiments))
    lost = _set_aside_unknown_trials(run_dir, known)
    if lost:
        out(f"{len(lost)} trial(s) begun after Ray's last snapshot were moved to trials_lost/: {lost}")
    started_ray = _connect(settings)
    try:
        recorder = _RunRecorder(run_dir, settings, out)
        tuner = tune.Tuner.restore(
            str(experiment),
            trainable=_tuner_trainable(settings, data, run_dir, _ended_trials(run_dir)),
            resume_unfinished=True,
            resume_errored=False,
        )
        # The run config, callbacks included, comes back from the pickled tuner state: replace the
        # callbacks so that this process's recorder and output are the ones used.
        tuner._local_tuner.get_run_config().callbacks = _callbacks(recorder)
        out(f"resuming {settings.name}: {len(known)} of {settings.trials} trials were begun")
        tuner.fit()
        # Ray loads the searcher's saved state into this object during fit(): after it, the study
        # holds the trials from before the interruption too (not a fresh random-search start).
        searcher = _describe_searcher(tuner._local_tuner._tune_config.search_alg)
        out(f"searcher after resuming: {searcher}")
        write_json(run_dir / "resume.json", {"searcher": searcher, "known_trials": sorted(known), "set_aside": lost})
        if trials is not None and trials > settings.trials:
            settings = _extend(run_dir, space, settings, data, trials, out)
    finally:
        if started_ray:
            ray.shutdown()
    return _finish(run_dir, settings, recorder, out)


def _finish(run_dir: Path, settings: Settings, recorder: "_RunRecorder", out) -> Path:
    table, path = write_leaderboard(run_dir)
    _summary(out, table, path, run_dir, settings, time.monotonic() - recorder.started)
    return run_dir


def _extend(run_dir: Path, space: SpaceFile, settings: Settings, data, trials: int, out) -> Settings:
    """Run ``trials - settings.trials`` more trials, the sampler warm-started from every finished one."""
    from analysis.records import read_trials

    extra = trials - settings.trials
    settings = dataclasses.replace(settings, trials=trials)
    write_json(run_dir / "settings.json", settings.to_dict() | {"mode": settings.mode})
    records = read_trials(run_dir)
    concurrency = settings.concurrency or _fitting_trials(settings)
    out(f"extending {settings.name} by {extra} trials; the sampler starts from {len(records)} finished trials")
    recorder = _RunRecorder(run_dir, settings, out)
    recorder.finished = {r.trial_id: r.status.get("status", "") for r in records}
    storage = _warm_started_storage(run_dir, settings)
    name = f"{_EXPERIMENT}-extend-{len(list(run_dir.glob(_EXPERIMENT + '-extend-*'))) + 1}"
    _tuner(settings, space, data, recorder, name, extra, concurrency, storage=storage).fit()
    return settings


def _tuner(settings, space, data, recorder, name: str, trials: int, concurrency: int, storage=None):
    return tune.Tuner(
        _tuner_trainable(settings, data, recorder.run_dir),
        tune_config=tune.TuneConfig(
            search_alg=_searcher(space, settings, concurrency, storage=storage),
            scheduler=_scheduler(settings),
            num_samples=trials,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(recorder.run_dir),
            callbacks=_callbacks(recorder),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            verbose=0,
        ),
    )


def _warm_started_storage(run_dir: Path, settings: Settings) -> Any:
    """An in-memory Optuna storage whose study holds every recorded trial of the run.

    ``analysis.study.frozen_trials`` replays each trial's parameters through the run's space file,
    which gives Optuna their exact distributions, conditional parameters included.
    """
    import optuna

    from analysis.study import frozen_trials, study_directions

    storage = optuna.storages.InMemoryStorage()
    # One direction per value frozen_trials gives: the metric's, then each objective's.
    directions = study_directions(settings.to_dict() | {"mode": settings.mode})
    study = optuna.create_study(storage=storage, study_name=_STUDY, directions=directions)
    study.add_trials(frozen_trials(run_dir)[0])
    return storage


def read_settings(run_dir: Path) -> Settings:
    """The resolved settings a run recorded."""
    from analysis.records import read_json
    from search.settings import field_types

    path = Path(run_dir) / "settings.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory (it has no settings.json)")
    recorded = read_json(path)
    return Settings(**{k: v for k, v in recorded.items() if k in field_types()})


def _ended_trials(run_dir: Path) -> dict[str, tuple[dict, str]]:
    """Trials the run directory records as ended: {trial_id: (last result, error line or "")}."""
    from analysis.records import read_trials

    ended = {}
    for record in read_trials(run_dir):
        status = record.status.get("status", "")
        if record.metrics and status.startswith(("completed", "stopped", "diverged")):
            ended[record.trial_id] = (record.metrics[-1], "")
        elif status == "error":
            ended[record.trial_id] = ({}, record.status.get("error") or "error")
    return ended


def _snapshot_trial_ids(experiment: Path) -> set[str]:
    """Trial ids in Ray's latest experiment snapshot of ``experiment``."""
    snapshots = sorted(experiment.glob("experiment_state-*.json"))
    if not snapshots:
        return set()
    state = json.loads(snapshots[-1].read_text())
    return {json.loads(entry[0])["trial_id"] for entry in state.get("trial_data", [])}


def _set_aside_unknown_trials(run_dir: Path, known: set[str]) -> list[str]:
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


def _describe_searcher(search_alg) -> dict[str, Any]:
    searcher = getattr(search_alg, "searcher", search_alg)  # inside the ConcurrencyLimiter
    study = getattr(searcher, "_ot_study", None)
    return {
        "searcher": type(searcher).__name__,
        "sampler": type(getattr(searcher, "_sampler", None)).__name__,
        "study_trials": len(study.trials) if study is not None else 0,
        "completed_study_trials": len([t for t in study.trials if t.state.name == "COMPLETE"]) if study else 0,
    }


def _tuner_trainable(settings: Settings, data, run_dir: Path, finished: dict | None = None) -> Any:
    return tune.with_resources(
        tune.with_parameters(
            _ray_trial,
            data=data,
            defaults=trial_defaults(settings, threads=max(1, int(settings.cpus_per_trial))),
            trainable_name=settings.trainable,
            run_dir=str(run_dir),
            finished=finished or {},
        ),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )


def _callbacks(recorder: "_RunRecorder") -> list:
    # Ray's own per-trial JSON/CSV results beside ours, without its TensorBoard logger.
    callbacks = [recorder, JsonLoggerCallback(), CSVLoggerCallback()]
    if recorder.settings.mlflow:  # after the recorder, which writes each trial's status first
        from search.tracking import MlflowCallback

        settings = recorder.settings
        callbacks.append(MlflowCallback(recorder.run_dir, settings.mlflow, settings.metric, settings.mode))
    return callbacks


def _trial_dirname(trial) -> str:
    return trial.trial_id


_EXPERIMENT = "ray"
_REPLAYED = "replayed_from_run_directory"
_STUDY = "search"

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


def _check_address(address: str) -> None:
    """Fail within seconds, before anything runs, when nothing answers at ``host:port``."""
    import socket

    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"`address` is {address!r}, but must be 'auto' or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ValueError(
            f"`address` {address!r}: nothing answers there ({error}); start the cluster "
            "(`ray start --head` or `ray up cluster.yaml`) or fix the address"
        ) from None


def _connect(settings: Settings) -> bool:
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


def _pack_gpus(prepared: PreparedRun, data, out: Callable[[str], None]) -> Settings:
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


def _fitting_trials(settings: Settings) -> int:
    resources = ray.cluster_resources()
    slots = math.floor(resources.get("CPU", 1) / settings.cpus_per_trial + 1e-9)
    if settings.gpus_per_trial:
        slots = min(slots, math.floor(resources.get("GPU", 0) / settings.gpus_per_trial + 1e-9))
    return max(1, min(settings.trials, slots))


def _searcher(space: SpaceFile, settings: Settings, concurrency: int, storage=None):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = settings.objective_names
    searcher = (_MultiObjectiveOptunaSearch if objectives else OptunaSearch)(
        space=SpaceFunction(space.path, space.text),
        # With objectives, a list: Optuna's study gets one direction per objective, and each
        # finished trial's last result gives its values (early-stopped trials included).
        metric=[settings.metric, *objectives] if objectives else settings.metric,
        mode=[settings.mode, *settings.objective_modes] if objectives else settings.mode,
        sampler=_sampler(settings),
        study_name=_STUDY,
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=concurrency)


def _sampler(settings: Settings):
    import optuna

    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    if settings.sampler == "nsga2":
        # Optuna's default population (50) would spend a small budget on one random generation:
        # about four generations of at least four trials each instead.
        return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=nsga2_population(settings.trials))
    # TPE starts modelling after a quarter of the budget (at most 10 random trials), and
    # constant_liar keeps concurrent trials from being proposed on top of each other. With several
    # objectives it splits trials by Pareto rank instead of by value.
    return optuna.samplers.TPESampler(
        seed=settings.seed, n_startup_trials=min(10, max(2, settings.trials // 4)), constant_liar=True
    )


def nsga2_population(trials: int) -> int:
    """NSGA-II's generation size for a budget of ``trials``: a quarter of it, within [4, 50]."""
    return max(4, min(50, trials // 4))


class _MultiObjectiveOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling Optuna FAIL for a multi-objective trial without every value.

    Ray's own class tells a list holding None (a trial that ended before reporting a cost), which
    Optuna rejects: the trial would stay RUNNING in the study for good. A diverged trial is FAIL
    too: its accuracy of 0 beside the smallest model's size would put it on the Pareto front, and
    NSGA-II breeds from the front. Single-objective searches use Ray's class itself.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if isinstance(self.metric, list) and trial_id not in self._completed_trials:
            result = result or {}
            values = [result.get(name) for name in self.metric]
            if result.get("diverged") or not all(_finite(v) for v in values):
                from optuna.trial import TrialState

                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _scheduler(settings: Settings):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if settings.scheduler == "fifo":
        return FIFOScheduler()

    return ASHAScheduler(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        max_t=settings.max_epochs,
        grace_period=settings.grace_period_epochs,
        reduction_factor=settings.reduction_factor,
    )


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


def _ray_trial(config: dict, data, defaults: dict, trainable_name: str, run_dir: str, finished: dict) -> None:
    from trainables import get_trainable
    from trainables.classifier import NOT_RETRIED

    trial_id = tune.get_context().get_trial_id()
    if trial_id in finished:
        # The run directory says this trial ended before the driver died, after Ray's last
        # snapshot: give Ray its recorded end instead of training it again.
        last, error = finished[trial_id]
        if error:
            raise RuntimeError(f"this trial failed before the run was interrupted: {error}")
        tune.report(last | {_REPLAYED: True})
        return
    store = _RayCheckpoints()
    node_id = ray.get_runtime_context().get_node_id()
    # Ray retries every failed trial up to max_failures times; a failure that a retry would only
    # reproduce (divergence, out of memory at the smallest micro-batch) is remembered in the run
    # directory (shared storage) and re-raised at once instead of training again.
    final = trial_dir(Path(run_dir), tune.get_context().get_trial_id()) / _FINAL_ERROR
    if final.exists():
        raise _RepeatedFailure(final.read_text().strip())

    def report(metrics: dict) -> None:
        store.report(metrics | {"node_id": node_id})  # which node ran each epoch

    try:
        get_trainable(trainable_name)(defaults | config, data, report, store)
    except NOT_RETRIED as error:
        final.parent.mkdir(parents=True, exist_ok=True)
        final.write_text(f"{type(error).__name__}: {error}\n")
        raise


_FINAL_ERROR = "final_error.txt"


class _RepeatedFailure(RuntimeError):
    """A deterministic failure of an earlier attempt of this trial, not run again."""


def trial_status_from_error(error_line: str) -> str:
    """The status a failed trial gets from its error: out of memory at the smallest micro-batch
    is "infeasible: out of memory" (the configuration does not fit the GPU), anything else "error"."""
    return _INFEASIBLE if _INFEASIBLE in error_line else "error"


_INFEASIBLE = "infeasible: out of memory"


class _RunRecorder(tune.Callback):
    """Runs in the driver: writes each trial's files and TensorBoard events, and prints progress."""

    def __init__(self, run_dir: Path, settings: Settings, out: Callable[[str], None], every_s: float | None = None):
        self.run_dir, self.settings, self.out, self.every_s = run_dir, settings, out, every_s
        self.defaults = trial_defaults(settings, threads=max(1, int(settings.cpus_per_trial)))
        self.started = time.monotonic()
        self.last_print = 0.0
        self.writers: dict[str, Any] = {}
        self.best: tuple[float, str, int] | None = None
        self.finished: dict[str, str] = {}
        self.started_at: dict[str, str] = {}
        self.replayed: set[str] = set()
        self.retries: dict[str, int] = {}
        self.progress = Progress(out, every_s or settings.progress_every_s)
        self.live_study: Any = None  # analysis.study.LiveStudy, opened at the first ended trial

    def on_trial_start(self, iteration, trials, trial, **info):
        directory = trial_dir(self.run_dir, trial.trial_id)
        if (directory / "config.json").exists():  # restored after a failure: keep the first record
            self._status(trial, "running")
            return
        write_json(
            directory / "config.json",
            {"trainable": self.settings.trainable, "config": self.defaults | trial.config, "params": trial.config},
        )
        self._status(trial, "running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(_REPLAYED):  # already recorded before an interruption
            self.replayed.add(trial.trial_id)
            return
        metrics = _recorded_metrics(result) | {"recorded_at": time.time()}
        append_metrics(trial_dir(self.run_dir, trial.trial_id) / "metrics.jsonl", metrics)
        writer = self._writer(trial.trial_id)
        for key, value in metrics.items():
            if key.startswith(("train_", "val_")) or key in ("lr", "images_per_s"):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, global_step=metrics["epoch"])
        writer.flush()
        value = result.get(self.settings.metric)
        if value is not None:
            sign = 1 if self.settings.mode == "max" else -1
            if self.best is None or sign * value > sign * self.best[0]:
                self.best = (value, trial.trial_id, metrics["epoch"])
        self._progress(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        epoch = result.get("epoch", 0)
        if result.get("diverged"):
            status = f"diverged at epoch {epoch}"
        elif epoch >= trial.config.get("max_epochs", self.settings.max_epochs):  # a space may search it
            status = "completed"
        else:
            status = f"stopped early at epoch {epoch}"
        self._finish(trial, status, result.get("error", "") if result.get("diverged") else "")
        self._progress(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = self._keep_traceback(trial)
        status = trial_status_from_error(error)
        if status == _INFEASIBLE:  # the message alone, without the exception's module path
            error = error[error.index(_INFEASIBLE) :]
        self._finish(trial, status, error)
        self._progress(trials, force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        error = self._keep_traceback(trial)
        if (trial_dir(self.run_dir, trial.trial_id) / _FINAL_ERROR).exists():
            # A failure a retry would only repeat (the trial wrote it down in _ray_trial). Ray has
            # already scheduled one restart, which re-raises at once; allow no more than that.
            trial.max_failures = 0
            return
        # Ray restarts the trial from its last checkpoint (FailureConfig.max_failures): not
        # finished, not an error (yet).
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        self._status(trial, "retrying", error=error)
        self.out(f"trial {trial.trial_id} failed ({error}); retry {self.retries[trial.trial_id]} from its last checkpoint")

    def _keep_traceback(self, trial) -> str:
        """Copy the trial's traceback into its record; return its last line."""
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).exists() else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours the actor's name
        if text:
            with open(trial_dir(self.run_dir, trial.trial_id) / "error.txt", "a") as file:
                file.write(text.rstrip() + "\n\n")
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return lines[-1][:300] if lines else "unknown error"

    def on_step_end(self, iteration, trials, **info):
        self._progress(trials)

    def on_experiment_end(self, trials, **info):
        for writer in self.writers.values():
            writer.close()
        self.progress.close()

    def _finish(self, trial, status: str, error: str) -> None:
        self.finished[trial.trial_id] = status
        self._status(trial, status, error=error)
        self._add_to_live_study(trial.trial_id)
        if trial.trial_id in self.replayed:
            return
        writer = self._writer(trial.trial_id)
        _write_hparams(writer, trial.config, self._best_of(trial))
        writer.close()
        self.writers.pop(trial.trial_id, None)

    def _add_to_live_study(self, trial_id: str) -> None:
        """RUN_DIR/study.db gets each trial as it ends, for optuna-dashboard; a failure here is
        reported once and never stops the search (the report writes the study again at the end)."""
        from analysis.records import read_trial
        from analysis.study import LiveStudy

        if self.live_study is False:
            return
        try:
            if self.live_study is None:
                self.live_study = LiveStudy(self.run_dir)
            self.live_study.add(read_trial(self.run_dir, trial_id))
        except Exception as error:  # noqa: BLE001 (monitoring only: the run's records stand)
            self.live_study = False
            self.out(f"live Optuna study disabled ({type(error).__name__}: {error}); `report` writes it at the end")

    def _best_of(self, trial) -> dict[str, float]:
        path = trial_dir(self.run_dir, trial.trial_id) / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        values = [r[self.settings.metric] for r in rows if self.settings.metric in r]
        if not values:
            return {}
        best = max(values) if self.settings.mode == "max" else min(values)
        return {f"best_{self.settings.metric}": best, "epochs": float(len(rows))}

    def _status(self, trial, status: str, error: str = "") -> None:
        result = trial.last_result or {}
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

    def _writer(self, trial_id: str):
        if trial_id not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[trial_id] = SummaryWriter(log_dir=str(trial_dir(self.run_dir, trial_id)))
        return self.writers[trial_id]

    def _progress(self, trials, force: bool = False) -> None:
        # search.progress decides when to show: a bar on a terminal, else a line every every_s
        # seconds and one at the end, however fast trials finish (``force`` is only a hint now).
        if not self.progress.due(len(self.finished), self.settings.trials):
            return
        now = time.monotonic()
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in self.finished)
        stopped = sum(1 for s in self.finished.values() if s.startswith("stopped"))
        errors = sum(1 for s in self.finished.values() if s == "error" or s.startswith("infeasible"))
        pending = self.settings.trials - len(self.finished) - running
        best = (
            f"best {self.settings.metric} {self.best[0]:.4f} (trial {self.best[1]}, epoch {self.best[2]})"
            if self.best
            else "no result yet"
        )
        self.progress.update(
            len(self.finished),
            self.settings.trials,
            f"[{_clock(now - self.started)}] {len(self.finished)}/{self.settings.trials} finished "
            f"({stopped} stopped early, {errors} errors), {running} running, {pending} pending | {best}",
            summary=f"{running} running, {errors} errors | {best}",
        )


# What Ray adds to every result on its own; of these only where the epoch ran is kept. Everything
# else a trainable reports (plain numbers, flags and strings) goes into metrics.jsonl as it is, so a
# trainable's new metric needs no change here.
_RAY_RESULT_KEYS = frozenset(
    {"training_iteration", "time_total_s", "episodes_total", "timesteps_total", "time_this_iter_s",
     "timestamp", "date", "time_since_restore", "timesteps_since_restore", "iterations_since_restore",
     "config", "checkpoint_dir_name", "done", "trial_id", "experiment_tag", "should_checkpoint", _REPLAYED}
)  # fmt: skip


def _recorded_metrics(result: dict) -> dict:
    return {
        k: v
        for k, v in result.items()
        if k not in _RAY_RESULT_KEYS and not k.startswith("_") and isinstance(v, (bool, int, float, str))
    }


def _write_hparams(writer, params: dict, metrics: dict[str, float]) -> None:
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    for summary in hparams(values, metrics):
        writer.file_writer.add_summary(summary)
    for key, value in metrics.items():
        writer.add_scalar(key, value)
    writer.flush()


def _environment() -> dict[str, Any]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:d}:{seconds:02d}"


def _summary(out, table, path: Path, run_dir: Path, settings: Settings, seconds: float) -> None:
    stopped = int(table["status"].str.startswith("stopped").sum())
    errors = int(table["status"].str.match(r"^(error|infeasible)").sum())
    out("")
    out(
        f"finished {len(table)} trials in {_clock(seconds)} ({stopped} stopped early by ASHA, {errors} errors)"
    )
    out(f"top 5 by {settings.metric}:")
    out(format_table(table, rows=5))
    if settings.objective_names and "pareto" in table:
        front = table[table["pareto"]]
        columns = ["rank", "trial_id", settings.metric, *settings.objective_names]
        out(f"Pareto front of {settings.metric} against {', '.join(settings.objective_names)} ({len(front)} trials):")
        out(format_table(front[columns]))
    out("")
    out(f"leaderboard: {path}")
    out(f"compare trials: tensorboard --logdir {run_dir}")


"""The engine: run a search on Ray Tune, resume or extend one. Its modules are the only ones that import Ray.

``run_search(space, settings)`` validates everything it can without Ray (space file, settings,
model and weights, data set), writes the run directory, then runs the trials with Ray Tune:
OptunaSearch (define-by-run, seeded TPE) behind a concurrency limit, ASHA stopping on the
``epoch`` attribute, one checkpoint per epoch. A driver-side callback records every trial's
config, metrics and status into the run directory and TensorBoard, so analysis never needs Ray.

A trial whose worker or node is lost restarts from its last checkpoint on any node, up to
``max_failures`` times; a failure that would only repeat (divergence, out of memory at the
smallest micro-batch) is not retried. ``gpu_packing="auto"`` measures a whole trial cycle of the
space's corners and samples on a GPU and sets the GPU share of every trial from the largest peak;
each trial caps its GPU memory at that share (trainables/gpu.py). With ``workers_per_trial`` > 1,
Ray Train workers train each trial data-parallel (search/workers.py).

With ``objectives`` (e.g. "params"), the search is multi-objective: OptunaSearch's study gets one
direction per objective, each finished trial's last result gives Optuna its values (TPE or NSGA-II
then aim at the Pareto front), while ASHA still stops trials on the metric alone.

The engine's jobs, one module each (this module only joins them):

    search/prepare.py      check the input, load and split the data, write the run directory (no Ray)
    search/ray_session.py  connect to Ray; how many trials the cluster fits, and whether it fits any
    search/gpu_packing.py  gpu_packing "auto": the GPU share of each trial, measured on a GPU
    search/workers.py      --workers-per-trial: a trial trained by Ray Train workers
    search/strategies/searcher.py   the searcher (OptunaSearch, or PBT's population) around the registries'
                           sampler and scheduler (search/strategies/samplers.py, search/strategies/schedulers.py: Ray-free
                           at import, one entry per strategy)
    search/tuner.py        Ray Tune's Tuner: build, restore (resume), extend
    search/trial.py        what runs in a Ray worker: the trainable, its checkpoints, its failures
    search/recorder.py     the driver's callback: trial files, TensorBoard, progress lines
    search/_adapter.py     the only private attributes of Ray and Optuna used
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from analysis.leaderboard import format_table, write_leaderboard
from analysis.records import RunDir, TrialStatus, write_json
from analysis.rerun import load_trial_data
from search import _adapter
from search.config.settings import Settings
from search.config.spaces import SpaceFile, load_space
from search.gpu_packing import gpu_share, pack_gpus
from search.prepare import PreparedRun, check_address, data_loading, open_data, prepare_run, write_run_dir
from search.ray_session import check_cluster_fits, connect, fitting_trials
from search.recorder import RunRecorder, clock
from search.strategies.schedulers import SCHEDULERS
from search.strategies.searcher import avoided_repeats, describe_searcher, nsga2_population
from search.trial import MetricNotReported, trial_status_from_error
from search.tuner import (
    EXPERIMENT,
    build_tuner,
    end_of_space,
    experiments,
    extend,
    fit,
    restore_snapshot_checkpoints,
    restore_tuner,
    set_aside_unknown_trials,
    snapshot_trial_ids,
)
from trainables.split import trial_data

__all__ = [
    "MetricNotReported",
    "PreparedRun",
    "execute_run",
    "gpu_share",
    "nsga2_population",
    "prepare_run",
    "read_settings",
    "resume_run",
    "run_search",
    "trial_status_from_error",
]


def run_search(space: SpaceFile, settings: Settings, out: Callable[[str], None] = print) -> Path:
    """Validate, then run the whole search; return the run directory."""
    return execute_run(prepare_run(space, settings, out), out)


def execute_run(prepared: PreparedRun, out: Callable[[str], None] = print) -> Path:
    """Write the run directory and run the trials. Joins a running Ray session if there is one."""

    started_ray = connect(prepared.settings)
    try:
        check_cluster_fits(prepared.settings, ray.cluster_resources(), started_ray)
        if prepared.images is None:  # decoded by Ray tasks into the data cache, or reopened
            prepared = open_data(prepared, ray_map, out)
        data = trial_data(prepared.images, prepared.split, loading=data_loading(prepared.settings, prepared.source))
        if prepared.settings.gpu_packing == "auto":
            # Measured before the run directory is written, so settings.json holds the GPU share used.
            prepared = dataclasses.replace(prepared, settings=pack_gpus(prepared, data, out))
        write_run_dir(prepared, out)
        settings, run_dir, space = prepared.settings, prepared.run_dir, prepared.space
        concurrency = settings.concurrency or fitting_trials(settings)
        out(
            f"run {settings.name}: {settings.trials} trials, up to {concurrency} at once, "
            f"<= {settings.max_epochs} epochs each, metric {settings.metric} ({settings.mode})"
        )
        recorder = RunRecorder(run_dir, settings, out)
        tuner = build_tuner(settings, space, data, recorder, EXPERIMENT, settings.trials, concurrency)
        fit(tuner, recorder)
        settings = end_of_space(run_dir, settings, tuner, out)
    finally:
        if started_ray:
            ray.shutdown()
    return _finish(run_dir, settings, recorder, out, avoided_repeats(_adapter.restored_search_alg(tuner)))


def ray_map(function: Callable, items, cpus_per_task: float = 1) -> Any:
    """``map`` over Ray tasks spread over the cluster's CPUs (``cpus_per_task`` each); results in
    order, at most two tasks per CPU in flight, so the driver holds a few decoded chunks at a time."""
    import collections

    task = ray.remote(num_cpus=cpus_per_task, scheduling_strategy="SPREAD", max_retries=2)(function)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(task.remote(item))
        if len(pending) >= window:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())


def resume_run(
    run_dir: Path, trials: int | None = None, address: str | None = None, out: Callable[[str], None] = print
) -> Path:
    """Continue an interrupted run, then, if ``trials`` exceeds its budget, extend it.

    Finished trials are not run again; trials that were running continue from their latest
    checkpoint; Ray restores the OptunaSearch searcher (with its TPE sampler and study) and the
    ASHA scheduler from the experiment state. Extending starts a further experiment in the same
    run directory whose sampler is warm-started with every finished trial.
    """

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
    found = experiments(run_dir)
    if not found or not tune.Tuner.can_restore(str(found[-1])):
        raise ValueError(
            f"run directory {str(run_dir)!r} holds no Ray experiment state to resume (it stopped before "
            "its first trial): start it again with `python -m search run`"
        )
    experiment = found[-1]
    check_address(settings.address)
    data = load_trial_data(run_dir)
    known = set().union(*(snapshot_trial_ids(e) for e in found))
    lost = set_aside_unknown_trials(run_dir, known)
    if lost:
        out(f"{len(lost)} trial(s) begun after Ray's last snapshot were moved to trials_lost/: {lost}")
    for line in restore_snapshot_checkpoints(experiment):
        out(line)
    started_ray = connect(settings)
    try:
        check_cluster_fits(settings, ray.cluster_resources(), started_ray)
        recorder = RunRecorder(run_dir, settings, out)
        tuner = restore_tuner(experiment, settings, data, run_dir, recorder)
        out(f"resuming {settings.name}: {len(known)} of {settings.trials} trials were begun")
        fit(tuner, recorder)
        settings = end_of_space(run_dir, settings, tuner, out)
        avoided = avoided_repeats(_adapter.restored_search_alg(tuner))
        # Ray loads the searcher's saved state into this object during fit(): after it, the study
        # holds the trials from before the interruption too (not a fresh random-search start).
        searcher = describe_searcher(_adapter.restored_search_alg(tuner))
        out(f"searcher after resuming: {searcher}")
        write_json(run_dir / "resume.json", {"searcher": searcher, "known_trials": sorted(known), "set_aside": lost})
        if trials is not None and trials > settings.trials:
            settings, more = extend(run_dir, space, settings, data, trials, out)
            avoided += more
    finally:
        if started_ray:
            ray.shutdown()
    return _finish(run_dir, settings, recorder, out, avoided)


def read_settings(run_dir: Path) -> Settings:
    """The resolved settings a run recorded; FileNotFoundError when ``run_dir`` is not a run directory."""
    return RunDir.open(run_dir).settings()


def _finish(run_dir: Path, settings: Settings, recorder: RunRecorder, out, avoided: int = 0) -> Path:
    table, path = write_leaderboard(run_dir)
    _summary(out, table, path, run_dir, settings, time.monotonic() - recorder.started, avoided)
    return run_dir


def _summary(out, table, path: Path, run_dir: Path, settings: Settings, seconds: float, avoided: int = 0) -> None:
    statuses = [TrialStatus.of(text) for text in table["status"]]
    stopped = sum(status is TrialStatus.STOPPED for status in statuses)
    errors = sum(status.is_failed() for status in statuses)
    repeats = int(table["repeat_of"].astype(bool).sum())
    by = SCHEDULERS[settings.scheduler].stops
    early = f"{stopped} stopped early by {by}, " if by else ""
    # Trained repeats (column repeat_of), and the sampler's proposals of tried ones asked again.
    asked = f", {avoided} proposals of tried configurations asked again" if avoided else ""
    out("")
    out(
        f"finished {len(table)} trials in {clock(seconds)} ({early}{errors} errors, {repeats} repeats{asked}; "
        f"sampler {settings.sampler}, scheduler {settings.scheduler})"
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

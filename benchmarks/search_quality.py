"""Search quality on replayed benchmarks: every strategy through the real engine, and its peers, in one run.

    python benchmarks/search_quality.py                       # the full run (resumes where it stopped)
    python benchmarks/search_quality.py --reduced --results benchmarks/results/search_quality_reduced.jsonl
    python benchmarks/search_quality.py --seeds 4 --trials 50 --workers 1,8 --methods engine:tpe+asha,optuna:tpe,random
    python benchmarks/search_quality.py --report-only         # print the figures and the plot from the results file

What runs, on one Ray session for the whole run:
- ``engine:SAMPLER+SCHEDULER``: this project's engine (``search.engine``, the functions that
  ``search.api.run`` calls, minus the report), on a replay space file (spaces/replay_*.py,
  trainables/replay.py): every registered single-objective sampler with every registered
  scheduler that applies (NAS-Bench-201 has one result per cell: FIFO only; PBT mutates a
  trial's hyperparameters mid-training, which a table cannot replay). ``engine:tpe+asha`` is
  the default.
- ``optuna:tpe[+sha|+hyperband]``: Optuna alone, its ``TPESampler(seed)`` with its defaults, with
  ``SuccessiveHalvingPruner`` or ``HyperbandPruner`` on the learning-curve table; ``n_jobs`` =
  workers (threads: the replayed trials sleep).
- ``raytune:random+asha``: Ray Tune used directly, its default random search (BasicVariantGenerator)
  with ``ASHAScheduler``'s defaults (``max_t`` set to the table's epochs).
- ``synetune:asha|bohb``: Syne Tune, a dedicated multi-fidelity library: its ``ASHA`` (random
  search, stopping-type asynchronous successive halving) and ``BOHB`` (ASHA with a kernel-density
  model) baselines, their defaults (grace period 1, reduction factor 3), on the learning-curve
  table; driven by hand the way its ``Tuner`` drives a scheduler (``synetune_cell``), with
  ``workers`` threads.
- ``random``: the reference, uniform sampling with replacement, sequential, no engine.
Every method replays the same table through ``trainables.replay.replay`` (one training seed per
observation, drawn from the run's seed and the configuration) and is scored the same way.

Scoring: after each report (in the order reports arrived), the pick is the configuration with the
best val_acc reported so far; its regret is the table's best mean-over-seeds final val_acc minus
the pick's, in percentage points. Budgets: trials ended, epochs reported, seconds since the first
trial started, in the table's recorded seconds (``score`` says how; with W > 1 workers each epoch
sleeps its recorded time x ``time_scale``, and the engine's own overhead is included).

Resumable: each finished cell (method x benchmark x workers x seed) is one line of
``--results`` (JSON); a rerun skips the cells found there. Cells run seed by seed, methods in an
order reversed on every other seed (A B C, C B A, ...).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))

from benchmarks._common import start_ray_retrying
from search.strategies.samplers import SAMPLERS
from search.strategies.schedulers import SCHEDULERS
from trainables.replay import open_table, replay

# name: (space file, trial budget of the full run, seeds of the full run for the core methods at one
# worker, seeds of the default at 8 and 32 workers, seeds of every other pair of the engine's registries)
BENCHMARKS = {
    "nb201_cifar10": ("spaces/replay_nb201_cifar10.py", 150, 20, 5, 3),
    "nb201_cifar100": ("spaces/replay_nb201_cifar100.py", 150, 10, 0, 2),
    "nb201_imagenet16": ("spaces/replay_nb201_imagenet16.py", 150, 10, 0, 2),
    "curves": ("spaces/replay_curves.py", 100, 20, 5, 2),
}
# Trials a search with W workers is sent per second of wall time, on average (each epoch sleeps its
# recorded time x W / (DEMAND x the table's mean full-trial time)): below what the engine sustains
# here (benchmarks/engine_throughput.py: 24-29 trials/s at 8 concurrent), so the order in which
# concurrent trials end follows their recorded cost rather than the engine's queue. One worker sleeps
# nothing: its trials run one after another in any case, and its clock is the table's (below).
DEMAND = 10.0
# Which workers each kind of method runs at in the full run (``--workers`` given: exactly those).
# The peers run at one worker only: a two-hour run here has no room for more (issue 20's note says so).
DEFAULT_WORKERS, PEER_WORKERS, EVERY_WORKERS = (1, 8, 32), (1,), (1,)
# The default with one setting changed ("engine:tpe+asha@stopped_trials=pruned"): the settings the
# defaults are chosen among (issue 20, item 4), on the learning-curve table, at one worker.
VARIANTS = ["stopped_trials=pruned", "reduction_factor=3", "grace_period_epochs=2"]
VARIANT_SEEDS = 10
DEFAULT_METHOD = "engine:tpe+asha"  # the engine's defaults; on a benchmark without epochs its space's FIFO
REFERENCE = "random"
SYNETUNE = ["synetune:asha", "synetune:bohb"]  # multi-fidelity: on a table with epochs only
# Samplers that optimise one objective (nsga2 is for --objectives); schedulers a table can replay.
NOT_REPLAYABLE_SCHEDULERS = {"pbt": "mutates hyperparameters mid-training: the table has no curve for that"}
SINGLE_OBJECTIVE_ONLY = {"nsga2": "multi-objective"}
RESULTS = ROOT / "benchmarks/results/search_quality.jsonl"
PLOTS = ROOT / "benchmarks/plots"


def has_epochs(benchmark: str) -> bool:
    return open_table(_table_name(benchmark)).epochs > 1


@functools.cache
@functools.lru_cache(maxsize=None)
def _table_name(benchmark: str) -> str:
    """The table a benchmark's space file replays (its ``table`` constant)."""
    import optuna

    from search.config.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / BENCHMARKS[benchmark][0])
    trial = optuna.create_study().ask()
    return space.space(trial)["table"]


def time_scale(benchmark: str, workers: int) -> float:
    """Seconds slept per recorded second of training, at ``workers`` concurrent trials (see DEMAND)."""
    if workers <= 1:
        return 0.0
    table = open_table(_table_name(benchmark))
    mean_trial = float(np.nanmean(np.nansum(table.epoch_time_s, axis=2)))
    return workers / (DEMAND * mean_trial)


def default_method(benchmark: str) -> str:
    """The engine's defaults (TPE, ASHA); on a benchmark without epochs, its space file's FIFO."""
    return DEFAULT_METHOD if has_epochs(benchmark) else DEFAULT_METHOD.replace("+asha", "+fifo")


def _table_exists(benchmark: str) -> bool:
    try:
        open_table(_table_name(benchmark))
    except ValueError:
        return False
    return True


def methods_for(benchmark: str) -> list[str]:
    """Every method that applies to ``benchmark``, the engine's pairs from the registries."""
    samplers = [name for name in SAMPLERS if name not in SINGLE_OBJECTIVE_ONLY]
    if has_epochs(benchmark):
        schedulers = [name for name in SCHEDULERS if name not in NOT_REPLAYABLE_SCHEDULERS]
        peers = ["optuna:tpe", "optuna:tpe+sha", "optuna:tpe+hyperband", "raytune:random+asha", *SYNETUNE]
    else:
        schedulers, peers = ["fifo"], ["optuna:tpe", "raytune:random+asha"]
    engine = [f"engine:{s}+{c}" for s in samplers for c in schedulers]
    variants = [f"{default_method(benchmark)}@{v}" for v in VARIANTS] if has_epochs(benchmark) else []
    return [*engine, *variants, *peers, REFERENCE]


# ---------------------------------------------------------------------------------------------
# One cell: a method's search on a benchmark, as the list of reports it received.


class Events:
    """The reports of one search, as they arrived: (seconds since start, table row, epoch, val_acc, trial ended)."""

    def __init__(self):
        self.rows: list[tuple[float, int, int, float, bool]] = []
        self._lock = threading.Lock()
        self.started = time.perf_counter()

    def add(self, row: int, epoch: int, val_acc: float, ended: bool, at: float | None = None) -> None:
        with self._lock:
            self.rows.append((time.perf_counter() - self.started if at is None else at, row, epoch, val_acc, ended))


def score(events: list[tuple[float, int, int, float, bool]], benchmark: str, scale: float) -> dict:
    """Regret (percentage points) of the pick after each report, with the budget spent by then.

    Seconds are the table's (recorded training seconds): with trials sleeping (``scale`` > 0), the
    wall time since the first start / ``scale``, the engine's own overhead included; with none
    (one worker, or the sequential reference), the recorded time of every epoch reported so far,
    summed (mean over the training seeds), with no overhead at all: the conservative side for a
    speed-up of many workers over one."""
    table = open_table(_table_name(benchmark))
    best, truth = table.best_mean_final, table.mean_final
    mean_time = np.nanmean(table.epoch_time_s, axis=1)  # [configs, epochs]
    events = sorted(events, key=lambda e: e[0])
    pick_value, regret = -np.inf, []
    seconds, ended = [], []
    rows, clock = set(), 0.0
    for at, row, epoch, value, end in events:
        if value > pick_value:
            pick_value, pick = value, row
        regret.append(round(100.0 * (best - float(truth[pick])), 4))
        clock += float(mean_time[row, epoch - 1])
        seconds.append(round(at / scale if scale > 0 else clock, 3))
        ended.append(int(end))
        rows.add(row)
    return {"regret": regret, "seconds": seconds, "ended": ended, "unique_rows": len(rows)}


def engine_cell(benchmark: str, sampler: str, scheduler: str, workers: int, seed: int, trials: int, scale: float,
                work: Path, changed: dict | None = None) -> dict:
    """One search through the engine; its reports read back from the run directory."""
    from analysis.records import read_trials
    from search.config.spaces import load_space, resolve_settings
    from search.engine import execute_run
    from search.prepare import prepare_run

    space_path = work / f"{benchmark}_x{scale:.3g}_space.py"  # the sleep scale depends on the workers
    if not space_path.is_file():
        text = (ROOT / BENCHMARKS[benchmark][0]).read_text()
        if text.count("_TIME_SCALE = 0.0") != 1:
            raise ValueError(f"{BENCHMARKS[benchmark][0]} needs one line `_TIME_SCALE = 0.0` for the benchmark to set")
        space_path.write_text(text.replace("_TIME_SCALE = 0.0", f"_TIME_SCALE = {scale!r}", 1))
    name = f"{benchmark}-{sampler}-{scheduler}-w{workers}-s{seed}" + "".join(f"-{k}-{v}" for k, v in (changed or {}).items())
    shutil.rmtree(work / name, ignore_errors=True)  # a cell stopped half-way starts again
    loaded = load_space(space_path)
    overrides = dict(
        sampler=sampler, scheduler=scheduler, trials=trials, concurrency=workers, seed=seed, storage=str(work),
        name=name, cpus_per_trial=1, max_failures=0, progress_every_s=3600.0,
    ) | (changed or {})
    out = functools.partial(_append_line, work / "engine.log")  # picklable: Ray pickles the recorder with it
    run_dir = execute_run(prepare_run(loaded, resolve_settings(loaded, overrides), out=out), out=out)
    records = read_trials(run_dir)
    starts = [_timestamp(r.status["started_at"]) for r in records if r.status.get("started_at")]
    origin = min(starts)
    events = []
    for record in records:
        for k, metrics in enumerate(record.metrics):
            events.append((metrics["recorded_at"] - origin, int(metrics["table_row"]), int(metrics["epoch"]),
                           float(metrics["val_acc"]), k == len(record.metrics) - 1))
    shutil.rmtree(run_dir, ignore_errors=True)
    return score(events, benchmark, scale) | {"trials": len(records)}


def _append_line(path: Path, line: str) -> None:
    with path.open("a") as file:
        print(line, file=file)


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def optuna_cell(benchmark: str, pruner: str, workers: int, seed: int, trials: int, scale: float) -> dict:
    """Optuna alone: its TPE (defaults, seeded), optionally a pruner, ``workers`` threads."""
    import optuna

    from search.config.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / BENCHMARKS[benchmark][0])
    table = open_table(_table_name(benchmark))
    pruners = {
        "": optuna.pruners.NopPruner(),
        "sha": optuna.pruners.SuccessiveHalvingPruner(),
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=table.epochs),
    }
    # Named: HyperbandPruner puts a trial in a bracket by a hash of the study's name and the trial's
    # number, and an unnamed study's name is a fresh UUID, so its cells differed from run to run.
    study = optuna.create_study(study_name=f"optuna-{benchmark}-{pruner or 'none'}-w{workers}-s{seed}", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruners[pruner])
    events = Events()

    def objective(trial):
        constants = space.space(trial) or {}  # the benchmark's own space function suggests the parameters
        config = dict(trial.params) | constants | {"seed": seed, "time_scale": scale, "max_epochs": table.epochs}
        row = table.row(config)
        last = {}

        def report(metrics):
            epoch = metrics["epoch"]
            trial.report(metrics["val_acc"], epoch)
            pruned = trial.should_prune()
            events.add(row, epoch, metrics["val_acc"], pruned or epoch == table.epochs)
            last.update(metrics)
            if pruned:
                raise optuna.TrialPruned()

        replay(config, None, report)
        return last["val_acc"]

    study.optimize(objective, n_trials=trials, n_jobs=workers)
    return score(events.rows, benchmark, scale) | {"trials": len(study.trials)}


def raytune_cell(benchmark: str, workers: int, seed: int, trials: int, scale: float, work: Path) -> dict:
    """Ray Tune used directly: BasicVariantGenerator (random) and ASHAScheduler, its defaults."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    table = open_table(_table_name(benchmark))
    space = {name: tune.choice(values) for name, values in table.parameters.items()}
    space |= {"table": table.name, "seed": seed, "time_scale": scale, "max_epochs": table.epochs}

    name = f"raytune-{benchmark}-w{workers}-s{seed}"
    reports = work / f"{name}-reports"  # each trial's reports, written by the trial itself
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)

    def trainable(config):
        path = reports / f"{tune.get_context().get_trial_id()}.jsonl"

        def report(metrics):
            with path.open("a") as file:
                file.write(json.dumps(metrics | {"reported_at": time.time()}) + "\n")
            tune.report(metrics)

        replay(config, None, report)

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", num_samples=trials, reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=workers),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=table.epochs),
        ),
        run_config=tune.RunConfig(storage_path=str(work), name=name, verbose=0),
    )
    started = time.time()
    tuner.fit()
    events, files = [], sorted(reports.glob("*.jsonl"))
    for path in files:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for k, metrics in enumerate(lines):
            events.append((metrics["reported_at"] - started, int(metrics["table_row"]), int(metrics["epoch"]),
                           float(metrics["val_acc"]), k == len(lines) - 1))
    shutil.rmtree(work / name, ignore_errors=True)
    shutil.rmtree(reports, ignore_errors=True)
    return score(events, benchmark, scale) | {"trials": len(files)}


class _Stop(Exception):
    """The scheduler said STOP: the replayed trial ends at this epoch."""


def synetune_cell(benchmark: str, method: str, workers: int, seed: int, trials: int, scale: float) -> dict:
    """Syne Tune: its ASHA or BOHB baseline with its defaults, seeded, ``workers`` threads.

    The scheduler gets the calls Syne Tune's ``Tuner`` makes (syne_tune/tuner.py, 0.16): ``suggest``
    and ``on_trial_add`` for a new trial; ``on_trial_result`` for each epoch; on STOP (which ASHA
    also says at ``max_t``) the trial ends and ``on_trial_remove``; a trial that ends on its own,
    ``on_trial_complete`` with its last result. One lock around the scheduler, as the Tuner's one
    thread."""
    from datetime import datetime

    from syne_tune.backend.trial_status import Trial
    from syne_tune.config_space import choice
    from syne_tune.optimizer import baselines
    from syne_tune.optimizer.scheduler import SchedulerDecision

    logging.getLogger("syne_tune").setLevel(logging.ERROR)  # "points_to_evaluate is passed in searcher_kwargs": its own baselines do that
    table = open_table(_table_name(benchmark))
    space = {name: choice(list(values)) for name, values in table.parameters.items()}
    build = {"synetune:asha": baselines.ASHA, "synetune:bohb": baselines.BOHB}[method]
    scheduler = build(space, metric="val_acc", time_attr="epoch", max_t=table.epochs, do_minimize=False, random_seed=seed)
    constants = {"table": table.name, "seed": seed, "time_scale": scale, "max_epochs": table.epochs}
    events, lock, started = Events(), threading.Lock(), itertools.count()

    def run(trial):
        config = trial.config | constants
        row, last = table.row(config), {}

        def report(metrics):
            with lock:
                decision = scheduler.on_trial_result(trial, metrics)
                stop = decision == SchedulerDecision.STOP
                events.add(row, metrics["epoch"], metrics["val_acc"], stop or metrics["epoch"] == table.epochs)
                last.update(metrics)
                if stop:
                    scheduler.on_trial_remove(trial)
                    raise _Stop()

        try:
            replay(config, None, report)
        except _Stop:
            return
        with lock:
            scheduler.on_trial_complete(trial, last)

    def worker():
        while True:
            with lock:
                trial_id = next(started)
                if trial_id >= trials:
                    return
                suggestion = scheduler.suggest()
                if suggestion is None:  # out of configurations: its Tuner ends the search there too
                    return
                trial = Trial(trial_id=trial_id, config=dict(suggestion.config), creation_time=datetime.now())
                scheduler.on_trial_add(trial)
            run(trial)

    # BOHB's random draws (its KDE searcher's _get_random_config, 0.16) use numpy's global generator,
    # not its seeded one: seeded here, so that a one-worker cell is the same on every run.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(worker) for _ in range(workers)]:
                future.result()  # a thread's error fails the cell
    finally:
        np.random.set_state(state)
    return score(events.rows, benchmark, scale) | {"trials": sum(e[4] for e in events.rows)}


def random_cell(benchmark: str, seed: int, trials: int, scale: float) -> dict:
    """The reference: uniform random configurations with replacement, each trained fully, one after another
    (its seconds are the table's, summed: no sleep)."""
    table = open_table(_table_name(benchmark))
    rng = np.random.default_rng(seed)
    events = []
    for row in rng.integers(len(table.points), size=trials):
        column = table.seed_column(int(row), seed)
        for epoch in range(1, table.epochs + 1):
            events.append((len(events), int(row), epoch, float(table.val_acc[row, column, epoch - 1]), epoch == table.epochs))
    return score(events, benchmark, 0.0) | {"trials": trials}


def _setting(variant: str) -> dict:
    """"reduction_factor=3" -> {"reduction_factor": 3}: the value as a number where it reads as one."""
    if not variant:
        return {}
    key, _, value = variant.partition("=")
    try:
        return {key: int(value)}
    except ValueError:
        return {key: value}


def run_cell(method: str, benchmark: str, workers: int, seed: int, trials: int, scale: float, work: Path) -> dict:
    kind, _, rest = method.partition(":")
    if kind == "engine":
        pair, _, variant = rest.partition("@")
        sampler, scheduler = pair.split("+")
        return engine_cell(benchmark, sampler, scheduler, workers, seed, trials, scale, work, _setting(variant))
    if kind == "optuna":
        return optuna_cell(benchmark, rest.partition("+")[2], workers, seed, trials, scale)
    if kind == "raytune":
        return raytune_cell(benchmark, workers, seed, trials, scale, work)
    if kind == "synetune":
        return synetune_cell(benchmark, method, workers, seed, trials, scale)
    if method == REFERENCE:
        return random_cell(benchmark, seed, trials, scale)
    raise ValueError(f"unknown method {method!r}")


# ---------------------------------------------------------------------------------------------
# Figures.


def regret_at_trials(cell: dict, budget: int) -> float:
    """Regret once ``budget`` trials had ended (their last report in); the last value if fewer ran."""
    ended = np.cumsum(cell["ended"])
    index = int(np.searchsorted(ended, budget))  # the first report at which `budget` trials had ended
    return cell["regret"][min(index, len(cell["regret"]) - 1)]


def regret_at_epochs(cell: dict, budget: int) -> float:
    return cell["regret"][min(budget, len(cell["regret"])) - 1]


def regret_at_seconds(cell: dict, seconds: float) -> float:
    """Regret of the pick ``seconds`` after the first trial started; inf before the first report."""
    index = int(np.searchsorted(cell["seconds"], seconds, side="right")) - 1
    return float("inf") if index < 0 else cell["regret"][index]


def needed(cells: list[dict], target: float, unit: str) -> float:
    """The least budget (trials ended, epochs, seconds) at which the median over seeds of the
    pick's regret was <= ``target``; inf if never within the budget run."""
    if unit == "trials":
        at, budgets = regret_at_trials, range(1, max(int(np.sum(c["ended"])) for c in cells) + 1)
    elif unit == "epochs":
        at, budgets = regret_at_epochs, range(1, max(len(c["regret"]) for c in cells) + 1)
    else:
        at, budgets = regret_at_seconds, np.linspace(0, max(c["seconds"][-1] for c in cells), 1000)
    return next((b for b in budgets if np.median([at(c, b) for c in cells]) <= target + 1e-9), float("inf"))


def _ratio(numerator: float, denominator: float) -> str:
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator == 0:
        return "  -  "
    return f"{numerator / denominator:.2f}"


def _iqr(values) -> str:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return "-"
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:6.2f} [{q1:.2f}, {q3:.2f}]"


def _budget(value: float) -> str:
    return "never" if not np.isfinite(value) else f"{value:g}"


def report(results: list[dict], out=print, plots: Path = PLOTS, stored: list[dict] | None = None) -> None:
    """Print the figures of ``results``; each benchmark's plot is drawn from every cell of it in
    ``stored`` (default: ``results``), so a run narrowed to a few cells does not replace the plot
    of the whole run with a plot of those."""
    by = {}
    for r in results:
        by.setdefault((r["benchmark"], r["workers"], r["method"]), []).append(r)
    every = by if stored is None else {}
    for r in stored or []:
        every.setdefault((r["benchmark"], r["workers"], r["method"]), []).append(r)
    for benchmark in [b for b in BENCHMARKS if any(k[0] == b for k in by)]:
        cells = {k: v for k, v in by.items() if k[0] == benchmark}
        trials = max(r["budget"] for v in cells.values() for r in v)
        epochs_table = open_table(_table_name(benchmark)).epochs
        out(f"\n== {benchmark}: regret in percentage points of val_acc (median [IQR] over seeds), budget {trials} trials ==")
        trial_budgets = sorted({b for b in (10, 25, 50, 100, 150) if b < trials} | {trials})
        reference = [r for (b, w, m), v in cells.items() if m == REFERENCE for r in v]
        target = float(np.median([regret_at_trials(r, trials) for r in reference])) if reference else None
        epoch_budgets = sorted({b for b in (60, 120, 300, 600, 1200) if b < trials * epochs_table} | {trials * epochs_table}) if epochs_table > 1 else []
        for workers in sorted({k[1] for k in cells}):
            out(f"-- {workers} worker(s) --")
            header = f"{'method':40} {'seeds':>5} {'unique':>6} " + " ".join(f"{'@' + str(b) + ' trials':>20}" for b in trial_budgets)
            out(header)
            for (_, w, method), v in sorted(cells.items(), key=lambda kv: kv[0][2]):
                if w != workers:
                    continue
                unique = np.median([r["unique_rows"] / max(1, r["trials"]) for r in v])
                out(f"{method:40} {len(v):5d} {unique:6.2f} " + " ".join(f"{_iqr([regret_at_trials(r, b) for r in v]):>20}" for b in trial_budgets))
            if epoch_budgets:
                out(f"{'  in epochs':40} {'':5} {'':6} " + " ".join(f"{'@' + str(b) + ' epochs':>20}" for b in epoch_budgets))
                for (_, w, method), v in sorted(cells.items(), key=lambda kv: kv[0][2]):
                    if w == workers:
                        out(f"{method:40} {len(v):5d} {'':6} " + " ".join(f"{_iqr([regret_at_epochs(r, b) for r in v]):>20}" for b in epoch_budgets))
            if target is not None:
                out(f"budget to reach random's median regret at {trials} trials ({target:.2f}) with the median over seeds, "
                    "and the speed-up over random that follows")
                ref_trials, ref_epochs = needed(reference, target, "trials"), needed(reference, target, "epochs")
                for (_, w, method), v in sorted(cells.items(), key=lambda kv: kv[0][2]):
                    if w != workers:
                        continue
                    t, e = needed(v, target, "trials"), needed(v, target, "epochs")
                    line = f"{method:40} trials {_budget(t):>6} (x{_ratio(ref_trials, t)})"
                    if epochs_table > 1:
                        line += f"   epochs {_budget(e):>6} (x{_ratio(ref_epochs, e)})"
                    out(line)
        _against_optuna(cells, benchmark, out)
        _scaling(cells, benchmark, out)
        plotted = {k: [r for r in v if r["budget"] == trials] for k, v in every.items() if k[0] == benchmark}
        _plot({k: v for k, v in plotted.items() if v} or cells, benchmark, trials, plots)


def _against_optuna(cells: dict, benchmark: str, out) -> None:
    """At 1 worker: the default against Optuna alone's TPE at equal trials, and whether the default at
    100 trials reaches Optuna alone's median at 150 (issue 20's targets); the trials it needs for that."""
    default, peer = cells.get((benchmark, 1, default_method(benchmark))), cells.get((benchmark, 1, "optuna:tpe"))
    if not default or not peer or min(r["budget"] for r in default + peer) < 150:
        return
    median = {(name, b): float(np.median([regret_at_trials(r, b) for r in v]))
              for name, v in (("default", default), ("optuna", peer)) for b in (50, 100, 150)}
    out(f"{default_method(benchmark)} against optuna:tpe at 1 worker (median regret): "
        + ", ".join(f"@{b} trials {median['default', b]:.2f} vs {median['optuna', b]:.2f}" for b in (50, 100, 150)))
    t = needed(default, median["optuna", 150], "trials")
    out(f"  trials the default needs to reach optuna:tpe's median at 150 trials ({median['optuna', 150]:.2f}): "
        f"{_budget(t)} (target: <= 100){'' if t <= 100 else '  NOT MET'}")


def _scaling(cells: dict, benchmark: str, out) -> None:
    """At W workers vs 1: trials and seconds the default needs to reach its own 1-worker median at 100 trials."""
    default = default_method(benchmark)
    one = cells.get((benchmark, 1, default))
    if not one:
        return
    budget = min(100, min(r["budget"] for r in one))
    target = float(np.median([regret_at_trials(r, budget) for r in one]))
    base_trials, base_seconds = needed(one, target, "trials"), needed(one, target, "seconds")
    out(f"{default} at W workers, to reach its 1-worker median regret at {budget} trials ({target:.2f}):")
    for (_, workers, method), v in sorted(cells.items()):
        if method != default:
            continue
        t, seconds = needed(v, target, "trials"), needed(v, target, "seconds")
        out(f"  {workers:3d} workers: trials {_budget(t):>6} ({_ratio(t, base_trials)}x the 1-worker trials), "
            f"table seconds {_budget(round(seconds, 1)):>9} ({_ratio(base_seconds, seconds)}x sooner than 1 worker)")


def _plot(cells: dict, benchmark: str, trials: int, plots: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({k[1] for k in cells})
    figure, axes = plt.subplots(1, len(workers), figsize=(5.5 * len(workers), 4.2), squeeze=False, sharey=True)
    budgets = np.unique(np.geomspace(1, trials, 40).astype(int))
    for axis, w in zip(axes[0], workers):
        for (_, cw, method), v in sorted(cells.items(), key=lambda kv: kv[0][2]):
            if cw != w:
                continue
            median = [np.median([regret_at_trials(r, b) for r in v]) for b in budgets]
            if method not in core_methods(benchmark) and "@" not in method:
                # Every other registry pair: thin grey lines, one legend entry for all of them.
                first = not any(line.get_label() == "other engine pairs" for line in axis.get_lines())
                axis.plot(budgets, np.maximum(median, 1e-3), "-", color="0.75", linewidth=0.7,
                          label="other engine pairs" if first else "_nolegend_")  # fmt: skip
                continue
            style = "-" if method.startswith("engine") else "--"
            width = 2.5 if method in (default_method(benchmark), REFERENCE) else 1.0
            axis.plot(budgets, np.maximum(median, 1e-3), style, linewidth=width, label=method)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("trials ended")
        axis.set_title(f"{benchmark}, {w} worker(s)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("median regret (val_acc points)")
    figure.tight_layout()
    plots.mkdir(parents=True, exist_ok=True)
    figure.savefig(plots / f"search_quality_{benchmark}.png", dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------


def _cell_key(result: dict) -> tuple:
    return result["method"], result["benchmark"], result["workers"], result["seed"], result["budget"]


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    results = []
    for line in path.read_text().splitlines():
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line torn by a stopped run: that cell runs again
    return results


def core_methods(benchmark: str) -> list[str]:
    """The methods the targets compare: the default, the engine's random search with the default's
    scheduler (the same engine without the sampler), the peers and the reference."""
    default = default_method(benchmark)
    engine_random = default.replace("engine:tpe+", "engine:random+")
    return [m for m in methods_for(benchmark) if m in (default, engine_random) or not m.startswith("engine:")]


def method_workers(method: str, benchmark: str) -> tuple[int, ...]:
    """The workers ``method`` runs at in the full run: the default at 1, 8 and 32 (the scaling
    targets), every other method at 1 (the reference is sequential by definition)."""
    if method == default_method(benchmark):
        return DEFAULT_WORKERS
    return PEER_WORKERS if method in core_methods(benchmark) else EVERY_WORKERS


def method_seeds(method: str, benchmark: str, workers: int = 1) -> int:
    """Seeds of ``method`` in the full run: the issue's 20 (10) for the core methods at one worker;
    fewer for the default at 8 and 32 workers (none on CIFAR-100 and ImageNet16-120) and for every
    other pair of the registries (a search at 8 or 32 workers costs 35-70 s here, one at a worker
    13 s: the run's time)."""
    _, _, seeds, scaling, every = BENCHMARKS[benchmark]
    if "@" in method:
        return VARIANT_SEEDS
    if method not in core_methods(benchmark):
        return every
    return seeds if workers == 1 else scaling


def plan(benchmarks: list[str], methods: list[str] | None, workers: list[int] | None, seeds: int | None, trials: int | None) -> list[tuple]:
    """Every cell in the order it runs: benchmark, workers, seed, then methods (reversed on odd
    seeds). ``workers``/``seeds`` None: each method's own (method_workers, method_seeds)."""
    cells = []
    for benchmark in benchmarks:
        full_trials = BENCHMARKS[benchmark][1]
        chosen = [m for m in methods_for(benchmark) if methods is None or m in methods]
        ws = sorted(set(workers) if workers else {w for m in chosen for w in method_workers(m, benchmark)})
        for w in ws:
            scale = time_scale(benchmark, w)
            for seed in range(seeds or max(method_seeds(m, benchmark, w) for m in chosen)):
                order = chosen if seed % 2 == 0 else chosen[::-1]
                for method in order:
                    if method == REFERENCE and w != 1:
                        continue  # sequential by definition
                    if workers is None and w not in method_workers(method, benchmark):
                        continue
                    if seeds is None and seed >= method_seeds(method, benchmark, w):
                        continue
                    cells.append((method, benchmark, w, seed, trials or full_trials, scale))
    return cells


REDUCED_METHODS = [
    "engine:tpe+asha", "engine:tpe+fifo", "engine:random+fifo", "engine:random+asha",
    "optuna:tpe", "optuna:tpe+sha", "raytune:random+asha", "synetune:asha", REFERENCE,
]


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the cells not in the results file yet, print the figures; the results (every cell chosen)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", default="", help=f"comma-separated, of {list(BENCHMARKS)} (default: all)")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method that applies; "
                        "'core': the default, the engine's random, the peers and random); see --list")
    parser.add_argument("--workers", default="", help="concurrent trials, comma-separated, for every method "
                        "(default: the default at 1,8,32, every other method at 1)")
    parser.add_argument("--seeds", type=int, default=0, help="seeds per method (0: the default, the peers and the "
                        "engine's random 20 on nb201_cifar10 and curves, 10 else; the default at 8 and 32 workers 5 "
                        "on those two; every other pair 3 on nb201_cifar10, 2 else; the variants 10)")
    parser.add_argument("--trials", type=int, default=0, help="trial budget per search (0: each benchmark's: 150 on NB-201, 100 on curves)")
    parser.add_argument("--reduced", action="store_true",
                        help="nb201_cifar10 and curves, 2 seeds, 20 trials, workers 1,8, a few methods: an end-to-end check")
    parser.add_argument("--results", default=str(RESULTS), help="the results file (JSON lines), appended to")
    parser.add_argument("--plots", default=str(PLOTS))
    parser.add_argument("--report-only", action="store_true", help="no new cells: print the figures of the results file")
    parser.add_argument("--list", action="store_true", help="print the cells this run would do, and stop")
    parser.add_argument("--before", default="", help="with --report-only: a results file whose cells take the place "
                        "of the same cells (method, benchmark, workers, seed, budget) of --results, to print the "
                        "figures from before a change that rewrote those cells")
    args = parser.parse_args(argv)
    if args.before and not args.report_only:
        raise SystemExit("--before replaces cells in the report only: give --report-only with it")
    if args.reduced:
        args.seeds, args.trials = args.seeds or 2, args.trials or 20
        args.benchmarks = args.benchmarks or "nb201_cifar10,curves"
        args.workers = args.workers or "1,8"
        args.methods = args.methods or ",".join(REDUCED_METHODS)
    benchmarks = [b for b in args.benchmarks.split(",") if b] or list(BENCHMARKS)
    for b in benchmarks:
        if b not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {b!r}: expected some of {list(BENCHMARKS)}")
    methods = [m for m in args.methods.split(",") if m] or None
    if methods == ["core"]:
        methods = sorted({m for b in benchmarks for m in core_methods(b)})
    workers = [int(w) for w in args.workers.split(",") if w] or None
    results_path = Path(args.results)
    # ``stored`` is the results file's list: the cells run below are appended to it, and the plots
    # show it (never the --before cells).
    results = stored = read_results(results_path)
    if args.before:
        before = read_results(Path(args.before))
        replaced = {_cell_key(r) for r in before}
        results = before + [r for r in results if _cell_key(r) not in replaced]
    done = {_cell_key(r) for r in results}
    cells = [c for c in plan(benchmarks, methods, workers, args.seeds or None, args.trials or None) if tuple(c[:5]) not in done]
    if args.list:
        for c in cells:
            print(*c[:5])
        print(f"{len(cells)} cells to run")
        return []
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {len(cells)} cell(s) to run, "
          f"{len(results)} in {results_path}", flush=True)
    if cells and not args.report_only:
        import ray

        from search.ray_session import start_local

        # As the engine's connect() sets them; it then joins this session (ray.is_initialized).
        # TUNE_FUNCTION_THREAD_TIMEOUT_S: Ray reuses a trial's actor for the next trial only if the
        # last one's thread ends within this (default 2 s); on a loaded machine it often did not, and
        # the next trial then waited for minutes (Ray 2.60, seen with the curves at 1 worker).
        for key, value in {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
                           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                           "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30"}.items():
            os.environ.setdefault(key, value)
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # no result files: we read our own
        joined = ray.is_initialized()  # a session of the caller's (the tests'): joined, left running
        if not joined:
            # One CPU more than the most trials at once: with exactly as many, a trial whose actor Ray
            # could not reuse ("reset_config") waited for a CPU the old actor still held (seen with ASHA).
            most = max(c[2] for c in cells)
            start_ray_retrying(lambda: start_local(num_cpus=most + 1, logging_level="warning", log_to_driver=False))
        results_path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="search-quality-"))
        started, loads = time.perf_counter(), []
        try:
            for k, (method, benchmark, w, seed, trials, scale) in enumerate(cells):
                began = time.perf_counter()
                measured = run_cell(method, benchmark, w, seed, trials, scale, work)
                cell = {"method": method, "benchmark": benchmark, "workers": w, "seed": seed, "budget": trials,
                        "time_scale": scale, "cell_s": round(time.perf_counter() - began, 2),
                        "load_1min": round(os.getloadavg()[0], 2)} | measured
                loads.append(cell["load_1min"])
                with results_path.open("a") as file:
                    file.write(json.dumps(cell) + "\n")
                results.append(cell)
                print(f"[{k + 1}/{len(cells)}] {method} {benchmark} w{w} seed {seed}: final regret {measured['regret'][-1]:.2f}, "
                      f"{measured['trials']} trials, {cell['cell_s']:.1f} s (load {cell['load_1min']:.1f})", flush=True)
        finally:
            if not joined:
                ray.shutdown()
            shutil.rmtree(work, ignore_errors=True)
        print(f"\nran {len(cells)} cells in {time.perf_counter() - started:.0f} s; load average (1 min) during the run: "
              f"min {min(loads):.1f}, median {np.median(loads):.1f}, max {max(loads):.1f}")
    chosen = [r for r in results if r["benchmark"] in benchmarks and (workers is None or r["workers"] in workers)
              and (methods is None or r["method"] in methods) and (not args.trials or r["budget"] == args.trials)]
    report(chosen, plots=Path(args.plots), stored=stored)
    _projection(results, out=print)
    return chosen


def _projection(results: list[dict], out=print) -> None:
    """The full run's time, from the cells measured so far: median seconds per cell of each
    (method kind, benchmark, workers), times the full plan's cells of that kind."""
    if not results:
        return
    per = {}
    for r in results:
        per.setdefault((r["method"].split(":")[0], r["benchmark"], r["workers"]), []).append(r["cell_s"] / r["budget"])
    full = plan([b for b in BENCHMARKS if _table_exists(b)], None, None, None, None)
    total, missing = 0.0, set()
    for method, benchmark, w, _, trials, _ in full:
        key = (method.split(":")[0], benchmark, w)
        if key not in per:
            nearest = [v for (k, b, _), v in per.items() if k == key[0] and b == benchmark] or [v for (k, _, _), v in per.items() if k == key[0]]
            if not nearest:
                missing.add(key)
                continue
            total += float(np.median(list(itertools.chain(*nearest)))) * trials
            missing.add(key)
        else:
            total += float(np.median(per[key])) * trials
    out(f"\nprojected full run: {len(full)} cells, about {total / 3600:.1f} h at the per-trial cost measured here"
        + (f" ({len(missing)} kinds of cell not measured, taken from the nearest measured)" if missing else ""))


if __name__ == "__main__":
    main()

"""Pending trials: TPE with and without its constant liar at W concurrent trials, on many seeds.

    python benchmarks/pending_trials.py [--seeds 40] [--workers 8,32] [--trials 150]
    python benchmarks/pending_trials.py --benchmarks nb201_cifar10 --workers 32 --no-ledger   # + Optuna alone's setting

The engine's 32-worker searches cost 80-120 s each here (benchmarks/search_quality.py), so they
run on 10 seeds. This script runs TPE alone, as the engine configures it, on many more seeds. It
drives Optuna's ask/tell through a discrete-event clock: W trials run at once, and each ends after
its recorded training time (the NAS-Bench-201 tables, one training seed per observation, as
trainables/replay.py draws it). When one ends it is told, and the next is asked. With the
engine's ledger (``repeats = "avoid"``), a proposal of a configuration already tried or running
is told its known outcome, or FAIL while it runs, and asked again (search/strategies/searcher.py
does the same). Hartmann-6, a continuous function, stands for a space with no exact repeats.

``--no-ledger`` adds a third side, as Optuna alone runs (benchmarks/search_quality.py's
``optuna:tpe``): the constant liar on and no ledger, so a proposed repeat is trained again, as
a trial of the budget.

It prints the median regret at 50, 100 and 150 trials, in percentage points (NAS-Bench-201) or
function units (Hartmann-6), for each benchmark, worker count and constant-liar setting.
Search quality depends on the order in which trials end, not on timings, so the load does not
change the figures; it is printed all the same.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.replay import open_table  # noqa: E402

OPERATIONS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
MAX_ASKS = 100  # a proposal of a tried configuration is asked again at most this often, then kept


def tpe(seed: int, trials: int, liar: bool) -> optuna.samplers.TPESampler:
    """TPE as search/strategies/samplers.py builds it (startup: a quarter of the budget, at most 10)."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)), constant_liar=liar)


def nb201(table):
    def propose(trial) -> int:
        return table.row({f"Op{e}": trial.suggest_categorical(f"Op{e}", OPERATIONS) for e in range(6)})

    def observe(row: int, seed: int) -> tuple[float, float, float]:
        """(value to maximise, regret of picking it, seconds it trains)."""
        column = table.seed_column(row, seed)
        regret = 100.0 * (table.best_mean_final - float(table.mean_final[row]))
        return float(table.val_acc[row, column, -1]), regret, float(np.nansum(table.epoch_time_s[row, column]))

    return propose, observe, True


_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381],
])  # fmt: skip
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HARTMANN_MIN = -3.32237


def hartmann6():
    points: list[np.ndarray] = []

    def propose(trial) -> int:
        points.append(np.array([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)]))
        return len(points) - 1

    def observe(index: int, seed: int) -> tuple[float, float, float]:
        value = -float(np.sum(_ALPHA * np.exp(-np.sum(_A * (points[index] - _P) ** 2, axis=1))))
        seconds = float(np.random.default_rng([seed, index]).uniform(0.5, 1.5))
        return -value, value - _HARTMANN_MIN, seconds

    return propose, observe, False


def search(make, workers: int, seed: int, trials: int, liar: bool, ledger: bool = True) -> np.ndarray:
    """The regret of the pick (the best value observed) after each trial ended, in the order they
    ended. ``ledger``: a proposed repeat is told and asked again (the engine), else trained again."""
    propose, observe, has_repeats = make()
    study = optuna.create_study(direction="maximize", sampler=tpe(seed, trials, liar))
    running: list[tuple[float, int, optuna.Trial, int, float, float]] = []
    known: dict[int, float | None] = {}  # configuration -> its value, None while it runs
    clock, started = 0.0, 0

    def start() -> None:
        nonlocal started
        for ask in range(MAX_ASKS):
            trial = study.ask()
            key = propose(trial)
            if not (has_repeats and ledger) or key not in known or ask == MAX_ASKS - 1:
                break
            if known[key] is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, known[key])
        value, regret, seconds = observe(key, seed)
        known[key] = None
        started += 1
        heapq.heappush(running, (clock + seconds, started, trial, key, value, regret))

    while started < min(workers, trials):
        start()
    best, regrets, pick_regret = -np.inf, [], np.inf
    while running:
        clock, _, trial, key, value, regret = heapq.heappop(running)
        study.tell(trial, value)
        known[key] = value
        if value > best:
            best, pick_regret = value, regret
        regrets.append(pick_regret)
        if started < trials:
            start()
    return np.asarray(regrets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--workers", default="8,32")
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--benchmarks", default="nb201_cifar10,nb201_cifar100,nb201_imagenet,hartmann6")
    parser.add_argument("--no-ledger", action="store_true", help="also the liar on without the ledger (Optuna alone's setting)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    benchmarks = {f"nb201_{name}": functools.partial(nb201, open_table(f"nb201:{name}")) for name in ("cifar10", "cifar100", "imagenet")}
    benchmarks["hartmann6"] = hartmann6
    benchmarks = {name: benchmarks[name] for name in args.benchmarks.split(",")}
    # (constant liar, ledger): the engine's two settings, then Optuna alone's
    sides = [(True, True), (False, True)] + ([(True, False)] if args.no_ledger else [])
    budgets = [b for b in (50, 100, 150) if b <= args.trials]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.seeds} seeds, "
          f"{args.trials} trials, median regret over seeds", flush=True)  # fmt: skip
    began = time.perf_counter()
    for name, make in benchmarks.items():
        for workers in [int(w) for w in args.workers.split(",")]:
            row: dict[tuple[bool, bool], list[np.ndarray]] = {side: [] for side in sides}
            for seed in range(args.seeds):  # one seed at a time, alternating which side goes first
                for liar, ledger in sides if seed % 2 == 0 else sides[::-1]:
                    row[liar, ledger].append(search(make, workers, seed, args.trials, liar, ledger))
            for liar, ledger in sides:
                median = np.median(np.stack(row[liar, ledger]), axis=0)
                figures = "  ".join(f"@{b} {median[b - 1]:.2f}" for b in budgets)
                side = f"constant liar {'on ' if liar else 'off'}" + ("" if ledger else ", no ledger")
                print(f"{name:16} {workers:>3} workers  {side}  {figures}", flush=True)
    print(f"took {time.perf_counter() - began:.0f} s; load average at the end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()

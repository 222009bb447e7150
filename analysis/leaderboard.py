"""The leaderboard: one row per trial, ranked by the run's metric at each trial's best epoch.

Built from the run directory's files alone (``analysis.records``), so it can be rebuilt at any
time, during a run, after a crash, or on another machine: ``python -m search leaderboard RUN_DIR``.

A run whose metric is not one of the fixed columns (a custom trainable's ``val_f1``, say) adds it
after ``status``. A multi-objective run (``objectives`` set, e.g. "params") adds, after ``val_loss``, a column per
objective (its value at the trial's best epoch by the metric; costs are constant within a trial),
``pareto`` (True for the trials no other trial beats in every objective at once) and
``pareto_rank`` (1 for the front, 2 for the front once the first is removed, ...). Only trials with
every value and a status other than diverged, error or infeasible are compared. Rows are still
ranked by the metric.

``repeat_of`` names the earlier trial that trained the same configuration (``repeats = "allow"``,
or a run from before repeats were avoided); empty for the first trial of each configuration.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.records import RunDir, TrialRecord, TrialStatus, read_trials, write_text
from search.config.proposals import configuration_key
from search.config.settings import OBJECTIVE_MODES, parse_objectives

__all__ = [
    "FIXED_COLUMNS",
    "best_epoch",
    "build_leaderboard",
    "dominates",
    "format_table",
    "objective_value",
    "objectives_of",
    "pareto_ranks",
    "repeats_of",
    "write_leaderboard",
]

FIXED_COLUMNS = (
    "rank",
    "trial_id",
    "status",
    "val_acc",
    "val_loss",
    "val_balanced_acc",
    "best_epoch",
    "epochs",
    "train_time_s",
    "repeat_of",
    "error",
)


def build_leaderboard(run_dir: Path, sort_by: str | None = None, status: str | None = None) -> pd.DataFrame:
    """Rank the trials of ``run_dir``; ``val_acc``/``val_loss`` are those of each trial's best epoch.

    ``sort_by`` ranks by another column (its direction: higher is better for *acc*, else lower);
    ``status`` keeps the rows whose status starts with it ("completed", "stopped", "error", ...).
    """
    settings = RunDir.open(run_dir).settings()
    metric, mode = settings.metric, settings.mode
    objectives = dict(zip(settings.objective_names, settings.objective_modes))
    records = read_trials(run_dir)
    rows = [_row(record, metric, mode, objectives) for record in records]
    for row, first in zip(rows, repeats_of(records)):
        row["repeat_of"] = first
    params = sorted({key for record in records for key in record.params} | {
        key for record in records for segment in record.lineage.get("schedule", []) for key in segment["config"]
    })
    fixed = list(FIXED_COLUMNS)
    if metric not in fixed:  # a trainable's own metric (e.g. val_f1) ranks the table: next to the status
        fixed.insert(fixed.index("status") + 1, metric)
    if objectives:
        at = fixed.index("val_loss") + 1
        fixed[at:at] = [*objectives, "pareto", "pareto_rank"]
    if any(record.lineage for record in records):  # PBT: which trial each cloned, at which epoch
        fixed[fixed.index("error"):fixed.index("error")] = ["cloned_from", "cloned_at_epoch", "clones"]
    columns = fixed + [p if p not in fixed else f"param_{p}" for p in params]
    table = pd.DataFrame(rows, columns=columns)
    if objectives:
        _mark_pareto(table, {metric: mode} | objectives)
    key = sort_by or metric
    if key not in table.columns:
        raise ValueError(f"cannot sort by {key!r}: columns are {list(table.columns)}")
    ascending = not (key == metric and mode == "max" or (key != metric and "acc" in key))
    # Ties: fewer epochs to the best, then the lower validation loss, then the less training time.
    # The loss comes before the time because a search repeated with the same seed must give the same
    # table: equal accuracies are common on small validation sets, and time varies with the load.
    loss = ["val_loss"] if "val_loss" in table.columns and key != "val_loss" else []
    table = table.sort_values(
        [key, "best_epoch", *loss, "train_time_s"], ascending=[ascending, True, *[True] * len(loss), True],
        na_position="last", kind="stable",
    )  # fmt: skip
    has_score = table[key].notna()
    table["rank"] = pd.Series(range(1, int(has_score.sum()) + 1), index=table.index[has_score], dtype="Int64")
    if status:
        table = table[table["status"].str.startswith(status)]
    return table.reset_index(drop=True)


def repeats_of(records: Sequence[TrialRecord]) -> list[str]:
    """For each trial (in the order they started), the earlier trial that trained the same
    configuration (the same searched values), or "" for the first of its configuration."""
    first: dict[str, str] = {}
    return [
        "" if first.setdefault(configuration_key(r.params), r.trial_id) == r.trial_id else first[configuration_key(r.params)]
        for r in records
    ]


def objectives_of(settings: dict) -> dict[str, str]:
    """A run's extra objectives with their modes, from its settings.json ({} for one objective)."""

    return {name: OBJECTIVE_MODES[name] for name in parse_objectives(settings.get("objectives", ""))}


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and better in one.

    ``modes`` gives each objective's direction ("max" or "min"). Equal points do not dominate
    each other, so ties share a front.
    """
    better = False
    for x, y, mode in zip(a, b, modes, strict=True):
        if mode == "min":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_ranks(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Non-dominated sorting: 1 for the points no other point dominates, 2 for those only rank-1
    points dominate, and so on (NSGA-II's fronts). Quadratic per front: for leaderboards, not millions."""
    ranks = [0] * len(points)
    left = set(range(len(points)))
    rank = 0
    while left:
        rank += 1
        front = [i for i in left if not any(dominates(points[j], points[i], modes) for j in left if j != i)]
        for i in front:
            ranks[i] = rank
        left -= set(front)
    return ranks


def _mark_pareto(table: pd.DataFrame, modes: dict[str, str]) -> None:
    names = list(modes)
    values = table[names].apply(pd.to_numeric, errors="coerce")
    ok = values.notna().all(axis=1) & values.map(math.isfinite).all(axis=1)
    ok &= table["status"].map(lambda text: TrialStatus.of(text).is_comparable()).astype(bool)
    ranks = pareto_ranks(values[ok].to_numpy().tolist(), [modes[n] for n in names])
    table["pareto_rank"] = pd.Series(ranks, index=table.index[ok], dtype="Int64").reindex(table.index)
    table["pareto"] = (table["pareto_rank"] == 1).fillna(False).astype(bool)


def best_epoch(record: TrialRecord, metric: str, mode: str) -> dict | None:
    """The epoch's metrics where ``metric`` was best (ties: the earliest, which reached the same
    score with less training); None when no epoch reported it."""
    scored = [m for m in record.metrics if m.get(metric) is not None]
    if not scored:
        return None
    if mode == "max":
        return max(scored, key=lambda m: (m[metric], -m["epoch"]))
    return min(scored, key=lambda m: (m[metric], m["epoch"]))


def objective_value(record: TrialRecord, best: dict | None, name: str) -> float | None:
    """Objective ``name`` at the best epoch; a cost is constant within a trial, so when that epoch
    lacks it, the trial's last reported value stands in. None when never reported."""
    if best is not None and best.get(name) is not None:
        return best[name]
    known = [m[name] for m in record.metrics if m.get(name) is not None]
    return known[-1] if known else None


def _row(record: TrialRecord, metric: str, mode: str, objectives: dict[str, str] | None = None) -> dict:
    best = best_epoch(record, metric, mode)
    row = {
        "trial_id": record.trial_id,
        "status": record.status.get("status", (TrialStatus.RUNNING if record.metrics else TrialStatus.PENDING).value),
        "val_acc": best.get("val_acc") if best else None,
        "val_loss": best.get("val_loss") if best else None,
        "val_balanced_acc": best.get("val_balanced_acc") if best else None,
        "best_epoch": best.get("epoch") if best else None,
        "epochs": len(record.metrics),
        "train_time_s": round(record.metrics[-1].get("train_time_s", 0.0), 2) if record.metrics else 0.0,
        "error": record.status.get("error", ""),
    }
    if metric not in row:
        row[metric] = best.get(metric) if best else None
    clones = record.lineage.get("clones", [])
    row["cloned_from"] = clones[-1]["trial"] if clones else ""
    row["cloned_at_epoch"] = clones[-1]["epoch"] if clones else None
    row["clones"] = len(clones)
    for name in objectives or {}:
        row[name] = objective_value(record, best, name)
    # A PBT clone: the config that trained its last epochs (its lineage's last), not the first one.
    params = record.lineage["schedule"][-1]["config"] if record.lineage.get("schedule") else record.params
    for key, value in params.items():
        row[key if key not in FIXED_COLUMNS else f"param_{key}"] = value
    return row


def write_leaderboard(run_dir: Path) -> tuple[pd.DataFrame, Path]:
    table = build_leaderboard(run_dir)
    path = Path(run_dir) / "leaderboard.csv"
    write_text(path, table.to_csv(index=False))
    return table, path


def format_table(table: pd.DataFrame, rows: int | None = None) -> str:
    """The first ``rows`` rows as aligned text, floats shortened, empty cells blank."""
    shown = table.head(rows) if rows else table
    shown = shown.drop(columns=[c for c in ("repeat_of", "error") if c in shown and not shown[c].astype(bool).any()])
    return shown.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4g}")

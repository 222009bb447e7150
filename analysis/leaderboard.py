"""The leaderboard: one row per trial, ranked by the run's metric at each trial's best epoch.

Built from the run directory's files alone (``analysis.records``), so it can be rebuilt at any
time, during a run, after a crash, or on another machine: ``python -m search leaderboard RUN_DIR``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.records import TrialRecord, read_json, read_trials, write_text

__all__ = ["FIXED_COLUMNS", "build_leaderboard", "format_table", "write_leaderboard"]

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
    "error",
)


def build_leaderboard(run_dir: Path, sort_by: str | None = None, status: str | None = None) -> pd.DataFrame:
    """Rank the trials of ``run_dir``; ``val_acc``/``val_loss`` are those of each trial's best epoch.

    ``sort_by`` ranks by another column (its direction: higher is better for *acc*, else lower);
    ``status`` keeps the rows whose status starts with it ("completed", "stopped", "error", ...).
    """
    settings = read_json(Path(run_dir) / "settings.json")
    metric, mode = settings["metric"], settings["mode"]
    records = read_trials(run_dir)
    rows = [_row(record, metric, mode) for record in records]
    params = sorted({key for record in records for key in record.params})
    columns = list(FIXED_COLUMNS) + [p if p not in FIXED_COLUMNS else f"param_{p}" for p in params]
    table = pd.DataFrame(rows, columns=columns)
    key = sort_by or metric
    if key not in table.columns:
        raise ValueError(f"cannot sort by {key!r}: columns are {list(table.columns)}")
    ascending = not (key == metric and mode == "max" or (key != metric and "acc" in key))
    table = table.sort_values(
        [key, "best_epoch", "train_time_s"], ascending=[ascending, True, True], na_position="last", kind="stable"
    )
    has_score = table[key].notna()
    table["rank"] = pd.Series(range(1, int(has_score.sum()) + 1), index=table.index[has_score], dtype="Int64")
    if status:
        table = table[table["status"].str.startswith(status)]
    return table.reset_index(drop=True)


def _row(record: TrialRecord, metric: str, mode: str) -> dict:
    best = None
    scored = [m for m in record.metrics if m.get(metric) is not None]
    if scored:
        # Ties go to the earliest epoch: it reached the same score with less training.
        if mode == "max":
            best = max(scored, key=lambda m: (m[metric], -m["epoch"]))
        else:
            best = min(scored, key=lambda m: (m[metric], m["epoch"]))
    row = {
        "trial_id": record.trial_id,
        "status": record.status.get("status", "running" if record.metrics else "pending"),
        "val_acc": best.get("val_acc") if best else None,
        "val_loss": best.get("val_loss") if best else None,
        "val_balanced_acc": best.get("val_balanced_acc") if best else None,
        "best_epoch": best.get("epoch") if best else None,
        "epochs": len(record.metrics),
        "train_time_s": round(record.metrics[-1].get("train_time_s", 0.0), 2) if record.metrics else 0.0,
        "error": record.status.get("error", ""),
    }
    for key, value in record.params.items():
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
    shown = shown.drop(columns=[c for c in ("error",) if c in shown and not shown[c].astype(bool).any()])
    return shown.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4g}")

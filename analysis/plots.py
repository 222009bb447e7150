"""PNG plots of a run, drawn with matplotlib's ``Figure`` directly (no pyplot state, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.leaderboard import build_leaderboard, pareto_ranks
from analysis.records import RunDir, read_trials

__all__ = ["plot_confusion", "plot_importance", "plot_learning_curves", "plot_parameters", "plot_pareto"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_learning_curves(run_dir: Path, path: Path, top: int = 5) -> Path:
    """The run's metric per epoch of every trial: the ``top`` trials of the leaderboard in colour, the rest grey."""

    metric = RunDir(Path(run_dir)).settings().metric
    board = build_leaderboard(run_dir)
    best = [str(t) for t in board.loc[board["rank"].notna(), "trial_id"].head(top)]
    figure = _figure(8, 4.5)
    axes = figure.add_subplot()
    records = {r.trial_id: r for r in read_trials(run_dir)}
    for trial_id, record in records.items():
        if trial_id in best:
            continue
        epochs = [m["epoch"] for m in record.metrics if metric in m]
        axes.plot(epochs, [m[metric] for m in record.metrics if metric in m], color="0.75", linewidth=1, marker=".")
    for rank, trial_id in enumerate(best, start=1):
        record = records[trial_id]
        epochs = [m["epoch"] for m in record.metrics if metric in m]
        axes.plot(epochs, [m[metric] for m in record.metrics if metric in m], linewidth=2, marker="o", label=f"#{rank} {trial_id}")
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per epoch: top {len(best)} trials in colour, the other {len(records) - len(best)} grey")
    axes.grid(alpha=0.3)
    if best:
        axes.legend(fontsize="small")
    return _save(figure, path)


def plot_parameters(trials: list[Any], metric: str, path: Path) -> Path:
    """The best metric of every scored trial against each searched parameter, one panel per parameter.

    ``trials`` are Optuna FrozenTrials (``analysis.study.frozen_trials``): their distributions give
    log axes to log-scale parameters and category order to categorical ones.
    """
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    scored = [t for t in trials if t.state == TrialState.COMPLETE]
    names = sorted({name for t in trials for name in t.params})
    columns = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure = _figure(3.2 * columns, 2.8 * rows)
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        having = [t for t in scored if name in t.params]
        values = [t.values[0] for t in having]  # the metric, also in a multi-objective run
        distribution = next((t.distributions[name] for t in trials if name in t.distributions), None)
        if isinstance(distribution, CategoricalDistribution):
            choices = list(distribution.choices)
            positions = [choices.index(t.params[name]) for t in having]
            jitter = np.random.default_rng(index).uniform(-0.12, 0.12, len(positions))
            axes.scatter(np.asarray(positions, dtype=float) + jitter, values, alpha=0.8)
            axes.set_xticks(range(len(choices)), [str(c) for c in choices])
        else:
            axes.scatter([t.params[name] for t in having], values, alpha=0.8)
            if getattr(distribution, "log", False):
                axes.set_xscale("log")
        axes.set_xlabel(f"{name} ({len(having)}/{len(scored)} trials)")
        axes.set_ylabel(f"best {metric}")
        axes.grid(alpha=0.3)
    figure.suptitle(f"best {metric} of each trial against each searched parameter")
    return _save(figure, path)


def plot_pareto(board: pd.DataFrame, metric: str, modes: dict[str, str], path: Path) -> Path:
    """The metric against each objective, one panel per objective, from a multi-objective leaderboard.

    Every compared trial is a grey dot; the trials of the Pareto front (the leaderboard's
    ``pareto``) are coloured and labelled with their trial id; each panel's line is the front of
    that pair alone (a staircase: what the best metric costs at most in that objective). An
    objective spanning more than 30x is drawn on a log axis. ``modes`` gives the objectives' and
    the metric's directions.
    """

    objectives = [name for name in modes if name != metric]
    compared = board[board["pareto_rank"].notna()]
    figure = _figure(5.5 * max(1, len(objectives)), 4.5)
    for index, name in enumerate(objectives):
        axes = figure.add_subplot(1, max(1, len(objectives)), index + 1)
        x = compared[name].astype(float).to_numpy()
        y = compared[metric].astype(float).to_numpy()
        front = compared["pareto"].to_numpy(dtype=bool)
        axes.scatter(x[~front], y[~front], color="0.6", alpha=0.8, label="dominated")
        axes.scatter(x[front], y[front], color="tab:red", zorder=3, label="Pareto front")
        labels: dict[tuple[float, float], list[str]] = {}  # equal points share one label
        for trial_id, xi, yi in zip(compared.loc[front, "trial_id"], x[front], y[front]):
            labels.setdefault((xi, yi), []).append(str(trial_id))
        for (xi, yi), ids in labels.items():
            axes.annotate(", ".join(ids), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
        if len(x):
            pair = pareto_ranks(list(zip(x, y)), [modes[name], modes[metric]])
            on_pair = sorted((xi, yi) for xi, yi, rank in zip(x, y, pair) if rank == 1)
            axes.plot([p[0] for p in on_pair], [p[1] for p in on_pair], color="tab:red", alpha=0.6,
                      drawstyle="steps-post" if modes[name] == "min" else "steps-pre")  # fmt: skip
            positive = x[x > 0]
            if len(positive) == len(x) and positive.max() / positive.min() > 30:
                axes.set_xscale("log")
        better = "lower" if modes[name] == "min" else "higher"
        axes.set_xlabel(f"{name} ({better} is better)")
        axes.set_ylabel(f"{metric} at the best epoch")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(
        f"{metric} against {', '.join(objectives)}: {int(compared['pareto'].sum())} of {len(compared)} trials on the Pareto front"
    )
    return _save(figure, path)


def plot_importance(table: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of ``importance.csv``; parameters that could not be scored are named, without a bar."""
    figure = _figure(7, 0.45 * max(3, len(table)) + 1)
    axes = figure.add_subplot()
    ordered = table.iloc[::-1]
    values = ordered["importance"].fillna(0.0).to_numpy()
    labels = [
        f"{p} (not scored)" if math.isnan(v) else str(p) for p, v in zip(ordered["parameter"], ordered["importance"])
    ]
    axes.barh(range(len(ordered)), values, color="tab:blue")
    axes.set_yticks(range(len(ordered)), labels)
    axes.set_xlabel("fANOVA importance (share of the variance of the best metric)")
    axes.set_xlim(0, max(1e-9, float(values.max(initial=0.0))) * 1.15)
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def plot_confusion(confusion: np.ndarray, classes, path: Path, title: str) -> Path:
    """Counts, true class in rows, predicted class in columns; each cell labelled."""
    confusion = np.asarray(confusion)
    size = min(14.0, 2.0 + 0.5 * len(classes))
    figure = _figure(size + 1, size)
    axes = figure.add_subplot()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(classes)), [str(c) for c in classes], rotation=90 if len(classes) > 10 else 0)
    axes.set_yticks(range(len(classes)), [str(c) for c in classes])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(classes) <= 30:
        threshold = confusion.max() / 2 if confusion.size else 0
        for (row, column), count in np.ndenumerate(confusion):
            axes.text(column, row, str(int(count)), ha="center", va="center", fontsize="small",
                      color="white" if count > threshold else "black")  # fmt: skip
    return _save(figure, path)

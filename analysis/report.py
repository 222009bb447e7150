"""The run's report: importance, the exported Optuna study, plots, and ``report.md`` that shows them.

    python -m search report RUN_DIR [--study-storage URL]

Writes into RUN_DIR: ``importance.csv``, ``study.db`` (or the study to ``--study-storage``),
``plots/learning_curves.png``, ``plots/parameters.png``, ``plots/importance.png`` and ``report.md``
(the leaderboard's top rows, the plots, and the test results when ``retrain`` has run).
A multi-objective run adds ``plots/pareto.png``, the Pareto front's table, and
``importance_<objective>.csv`` for each further objective.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd

from analysis.baseline import BASELINE_FILE, format_baseline, format_baselines
from analysis.leaderboard import objectives_of, write_leaderboard
from analysis.plots import plot_importance, plot_learning_curves, plot_parameters, plot_pareto
from analysis.records import RunDir, read_json, write_text
from analysis.study import export_study, frozen_trials, write_importance

__all__ = ["markdown_table", "write_report"]


def write_report(run_dir: Path, storage: str | None = None, top: int = 10) -> Path:
    """Write the analysis files and ``RUN_DIR/report.md``; return the report's path."""

    run_dir = Path(run_dir)
    recorded = RunDir.open(run_dir).settings()
    settings = recorded.as_record()
    metric = settings["metric"]
    board, _ = write_leaderboard(run_dir)
    importance, _ = write_importance(run_dir)
    url, study_name = export_study(run_dir, storage)
    trials, _ = frozen_trials(run_dir)
    plots = run_dir / "plots"
    plot_learning_curves(run_dir, plots / "learning_curves.png")
    plot_parameters(trials, metric, plots / "parameters.png")
    plot_importance(importance, plots / "importance.png")
    objectives = objectives_of(settings)
    pareto_lines: list[str] = []
    if objectives:
        plot_pareto(board, metric, {metric: settings["mode"]} | objectives, plots / "pareto.png")
        pareto_lines = _pareto_section(run_dir, board, metric, objectives)

    shown = board.drop(columns=[c for c in ("error",) if c in board and not board[c].astype(bool).any()])
    lines = [
        f"# Run {settings.get('name') or run_dir.name}",
        "",
        f"{len(board)} trials of `space.py` on `{settings['dataset']}` (data fraction {settings['data_fraction']}, "
        f"{settings['image_size']} px), model `{settings['model']}`, up to {settings['max_epochs']} epochs, "
        f"ranked by `{metric}` ({settings['mode']}) at each trial's best epoch. "
        f"Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    lines += _test_section(run_dir, settings)
    lines += [
        f"## Leaderboard, top {min(top, len(board))} of {len(board)}",
        "",
        markdown_table(shown.head(top)),
        "",
        "Full table: [leaderboard.csv](leaderboard.csv).",
        "",
        *pareto_lines,
        "## Learning curves",
        "",
        "![learning curves](plots/learning_curves.png)",
        "",
        f"## {metric} against each parameter",
        "",
        "![parameters](plots/parameters.png)",
        "",
        "## Parameter importance (fANOVA)",
        "",
        "![importance](plots/importance.png)",
        "",
        markdown_table(importance),
        "",
        "Importances of the scored parameters sum to 1; a parameter some trials lack (conditional) "
        "is listed with no importance and the reason. With few trials these numbers are noisy.",
        *_sampled(importance),
        "",
        "## Optuna study",
        "",
        f"Study `{study_name}` in `{url}`: `optuna-dashboard {url}`, or "
        f"`optuna.load_study(study_name={study_name!r}, storage={url!r})`.",
        "",
        f"TensorBoard, trials and retrained models side by side: `tensorboard --logdir {run_dir.resolve()}`",
        "",
    ]
    path = run_dir / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _pareto_section(run_dir: Path, board: pd.DataFrame, metric: str, objectives: dict[str, str]) -> list[str]:
    front = board[board["pareto"]]
    columns = ["rank", "trial_id", "status", metric, *objectives, "best_epoch"]
    columns += [c for c in board.columns[board.columns.get_loc("error") + 1 :]]  # the parameters
    lines = [
        f"## Pareto front: {metric} against {', '.join(objectives)}",
        "",
        f"{len(front)} of {int(board['pareto_rank'].notna().sum())} compared trials are on the front: no other "
        f"trial is at least as good in {metric} and every objective and better in one. Diverged, failed and "
        "unscored trials are not compared. `retrain` tests the winner by "
        f"`{metric}` (rank 1); `retrain --top-k K` the top K by `{metric}`.",
        "",
        "![pareto front](plots/pareto.png)",
        "",
        markdown_table(front[[c for c in columns if c in front.columns]]),
        "",
    ]
    for name in objectives:
        table, path = write_importance(run_dir, objective=name)
        lines += [f"Parameter importance for `{name}` ([{path.name}]({path.name})):", "", markdown_table(table), ""]
    return lines


def _test_section(run_dir: Path, settings: dict) -> list[str]:
    results = run_dir / "test_results.csv"
    if not results.is_file():
        return [
            "## Test set",
            "",
            f"Not evaluated yet: `python -m search retrain {run_dir}` retrains the winner and tests it once.",
            "",
        ]
    table = pd.read_csv(results, dtype={"trial_id": str})
    best = table.iloc[0]
    lines = [
        "## Test set (held out from every trial, read once per retrained model)",
        "",
        f"**Winner, trial {best['trial_id']}: validation accuracy {best['val_acc']:.4f}; retrained on train + validation "
        f"for {int(best['best_epoch'])} epoch(s), test accuracy {best['test_acc_mean']:.4f} ± {best['test_acc_std']:.4f} "
        f"(mean ± std over {int(best['seeds'])} seeds); retraining took {best['retrain_time_s']:.1f} s.**",
        "",
        *_baseline_lines(best, run_dir),
        markdown_table(table),
        "",
    ]
    for trial_id in table["trial_id"]:
        if (run_dir / "retrain" / f"{trial_id}-confusion.png").is_file():
            lines += [f"![confusion matrix of trial {trial_id}](retrain/{trial_id}-confusion.png)", ""]
            lines += [f"Per class: [retrain/{trial_id}-per_class.csv](retrain/{trial_id}-per_class.csv).", ""]
    return lines


def _baseline_lines(best: pd.Series, run_dir: Path) -> list[str]:
    stored = run_dir / "retrain" / BASELINE_FILE
    if "strongest_baseline" in best and stored.is_file():
        rows = read_json(stored)["rows"]
        metric = best.get("strongest_baseline_metric", "test_acc")
        headline = format_baselines(rows, best[f"{metric}_mean"], best[f"{metric}_std"], int(best["seeds"]), metric)[-1]
        return [
            f"**{headline[0].upper() + headline[1:]}.**",
            "",
            "Classic baselines, fitted on the same train + validation images and tested once on the same test images "
            "([retrain/baselines.csv](retrain/baselines.csv)):",
            "",
            *(f"- Classic baseline, {format_baseline(row)}" for row in rows),
            "",
        ]
    if "baseline_test_acc" not in best or pd.isna(best["baseline_test_acc"]):
        return []
    gap = best["test_acc_mean"] - best["baseline_test_acc"]
    return [
        f"**Classic baseline, {best['baseline']}** (untuned, the same train + validation and test images): "
        f"test accuracy {best['baseline_test_acc']:.4f}, balanced {best['baseline_test_balanced_acc']:.4f}; "
        f"the winner is {abs(gap):.4f} {'above' if gap >= 0 else 'below'} it.",
        "",
    ]


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; floats to 4 significant digits, missing values blank."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _sampled(importance) -> list[str]:
    """A line saying fANOVA was fitted to a sample of the scored trials, when it was."""
    fitted, scored = importance.attrs.get("fitted", 0), importance.attrs.get("scored", 0)
    if not 0 < fitted < scored:
        return []
    return [f"fANOVA was fitted to a seeded sample of {fitted:,} of the {scored:,} scored trials (analysis/study.py: FANOVA_TRIALS)."]

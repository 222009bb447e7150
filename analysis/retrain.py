"""Retrain the winners on train + validation, then evaluate each model once on the held-out test split.

    python -m search retrain RUN_DIR [--top-k 1] [--seeds 3] [--force]

For each of the top-k trials of the leaderboard, S models are trained in this process (no Ray) on
the train and validation images together, for the epoch count at which the trial reached its best
validation score (the learning-rate schedule keeps the trial's horizon, so the models replay the
trial's first ``best_epoch`` epochs on more data), with seeds ``seed, seed + 1, ...`` (the first is
the trial's own). Each model is evaluated once on the test split, which no trial ever saw and which
nothing but this module reads. What it writes::

    RUN_DIR/test_results.csv               one row per retrained trial: test metrics, mean and std over seeds
    RUN_DIR/retrain/models.csv             one row per model (trial x seed)
    RUN_DIR/retrain/<trial>-per_class.csv  precision, recall, F1 per class, mean and std over seeds
    RUN_DIR/retrain/<trial>-confusion.csv  confusion matrix summed over seeds (rows: true, columns: predicted)
    RUN_DIR/retrain/<trial>-confusion.png
    RUN_DIR/retrain/<trial>-seed<n>/
      model.pt                             state dict (torch.load(..., weights_only=True))
      model.json                           the config, classes and image size that rebuild it
      metrics.json, per_class.csv, confusion.csv, events.out.tfevents.*   this model's test results

A second call reuses every model already evaluated (the test split is read once per model), unless
``force`` is set.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.records import read_json, read_trials, trial_dir, write_json, write_text

__all__ = [
    "FinalData",
    "classification_metrics",
    "confusion_matrix",
    "format_test_summary",
    "load_classifier",
    "load_final_data",
    "mean_std",
    "retrain",
    "retrained_models",
]

# The test metrics of one model that test_results.csv summarises as mean and std over seeds.
SUMMARY_METRICS = ("test_acc", "test_loss", "test_balanced_acc", "test_macro_f1")
# Columns of retrain/models.csv: one row per retrained model.
MODEL_COLUMNS = ("trial_id", "rank", "seed", "epochs", *SUMMARY_METRICS, "test_examples", "train_examples", "retrain_time_s")


@dataclass(frozen=True)
class FinalData:
    """Train + validation for the final models, and the test split they are evaluated on once."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    train_indices: np.ndarray  # into the data set: the run's train and validation indices
    test_indices: np.ndarray


def load_final_data(run_dir: Path) -> FinalData:
    """The run's data set, split as recorded in ``split.json``: train + validation, and test.

    The only reader of the test split (trials get ``analysis.rerun.load_trial_data``, which has none).
    """
    from trainables.data import load_dataset

    settings = read_json(Path(run_dir) / "settings.json")
    split = read_json(Path(run_dir) / "split.json")
    images = load_dataset(settings["dataset"], settings["image_size"])
    if list(images.classes) != split["classes"]:
        raise ValueError(
            f"the classes of data set {settings['dataset']!r} changed since the run: now {list(images.classes)}, "
            f"recorded {split['classes']} in {Path(run_dir) / 'split.json'}"
        )
    train = np.union1d(np.asarray(split["train"], dtype=np.int64), np.asarray(split["val"], dtype=np.int64))
    test = np.asarray(split["test"], dtype=np.int64)
    overlap = np.intersect1d(train, test)
    if len(overlap):
        raise ValueError(f"{Path(run_dir) / 'split.json'}: {len(overlap)} test indices are also train/val, e.g. {overlap[:5].tolist()}")
    return FinalData(
        train_images=images.images[train],
        train_labels=images.labels[train],
        test_images=images.images[test],
        test_labels=images.labels[test],
        classes=images.classes,
        train_indices=train,
        test_indices=test,
    )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows true class, columns predicted class."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_metrics(confusion: np.ndarray, classes: tuple[str, ...]) -> tuple[dict[str, float], pd.DataFrame]:
    """Accuracy, balanced accuracy and macro F1, and per-class precision, recall, F1 and support.

    A class never predicted has precision 0, a class absent from the labels recall 0 (as
    scikit-learn's ``zero_division=0``); balanced accuracy averages recall over present classes.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(true_positive), where=both > 0)
    per_class = pd.DataFrame(
        {"class": list(classes), "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    )
    present = support > 0
    summary = {
        "test_acc": float(true_positive.sum() / max(1.0, confusion.sum())),
        "test_balanced_acc": float(recall[present].mean()) if present.any() else 0.0,
        "test_macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
    return summary, per_class


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of a single value is 0."""
    values = np.asarray(list(values), dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def retrain(
    run_dir: Path,
    top_k: int = 1,
    seeds: int = 3,
    force: bool = False,
    threads: int | None = None,
    out: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Retrain and test the top ``top_k`` trials, ``seeds`` models each; return test_results.csv's table."""
    from analysis.leaderboard import build_leaderboard

    run_dir = Path(run_dir)
    if not (run_dir / "settings.json").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory (it has no settings.json)")
    if top_k < 1:
        raise ValueError(f"The value of `top_k` is {top_k}, but must be an integer >= 1.")
    if seeds < 1:
        raise ValueError(f"The value of `seeds` is {seeds}, but must be an integer >= 1.")
    settings = read_json(run_dir / "settings.json")
    board = build_leaderboard(run_dir)
    ranked = board[board["rank"].notna() & (board["status"] != "error")]
    records = read_trials(run_dir)
    if len(ranked) < top_k:
        raise ValueError(
            f"`top_k` is {top_k}, but run {str(run_dir)!r} has {len(ranked)} scored trial(s): use --top-k {max(1, len(ranked))}"
            if len(ranked)
            else f"run {str(run_dir)!r} has no trial with a {settings['metric']} score to retrain"
        )
    threads = threads or os.cpu_count() or 1
    root = run_dir / "retrain"
    data: FinalData | None = None
    rows, reused, started = [], 0, time.monotonic()
    for _, entry in ranked.head(top_k).iterrows():
        trial_id = str(entry["trial_id"])
        recorded = read_json(trial_dir(run_dir, trial_id) / "config.json")
        epochs = int(entry["best_epoch"])
        # The rates the trial ran at: lr_schedule "plateau" replays them (fit_classifier).
        lrs = [m["lr"] for m in next(r for r in records if r.trial_id == trial_id).metrics if "lr" in m]
        for k in range(seeds):
            config = dict(recorded["config"]) | {"threads": threads}
            config["seed"] = int(config.get("seed", 0)) + k
            directory = root / f"{trial_id}-seed{config['seed']}"
            stored = _stored(directory, config, epochs)
            if stored is not None and not force:
                rows.append(stored)
                reused += 1
                continue
            if data is None:
                data = load_final_data(run_dir)
                out(
                    f"retrain: {len(data.train_labels)} train+validation images, "
                    f"{len(data.test_labels)} test images (read now, once per model)"
                )
            out(f"retrain: trial {trial_id} (rank {int(entry['rank'])}), seed {config['seed']}, {epochs} epoch(s)")
            rows.append(_train_and_test(directory, trial_id, int(entry["rank"]), config, epochs, data, settings, lrs))
    models = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    write_text(root / "models.csv", models.to_csv(index=False))
    table = _summarize(models, board)
    write_text(run_dir / "test_results.csv", table.to_csv(index=False))
    _write_per_trial(root, models)
    out(
        f"retrain: {len(models)} model(s) ({reused} reused from an earlier retrain; --force retrains them) "
        f"in {time.monotonic() - started:.1f} s; test results: {run_dir / 'test_results.csv'}"
    )
    return table


def _stored(directory: Path, config: dict, epochs: int) -> dict | None:
    needed = [directory / name for name in ("model.pt", "model.json", "metrics.json")]
    if not all(path.is_file() for path in needed):
        return None
    built = read_json(directory / "model.json")
    if built["epochs"] != epochs or {k: v for k, v in built["config"].items() if k != "threads"} != {
        k: v for k, v in config.items() if k != "threads"
    }:
        return None
    return read_json(directory / "metrics.json")


def _train_and_test(
    directory: Path, trial_id: str, rank: int, config: dict, epochs: int, data: FinalData, settings: dict, lrs: list[float]
) -> dict:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from analysis.plots import plot_confusion
    from trainables.classifier import fit_classifier

    if directory.exists():
        shutil.rmtree(directory)  # --force, or a model from another config: start clean
    directory.mkdir(parents=True)
    writer = SummaryWriter(log_dir=str(directory))
    curve: list[dict] = []

    def report(metrics: dict) -> None:
        curve.append(metrics)
        for key in ("train_loss", "train_acc", "lr"):
            writer.add_scalar(key, metrics[key], global_step=metrics["epoch"])

    began = time.perf_counter()
    model = fit_classifier(
        config, data.train_images, data.train_labels, data.classes, epochs=epochs, report=report, lr_per_epoch=lrs
    )
    train_time = time.perf_counter() - began
    torch.save({k: v.detach().cpu() for k, v in model.net.state_dict().items()}, directory / "model.pt")
    write_json(
        directory / "model.json",
        {
            "trial_id": trial_id,
            "config": config,
            "epochs": epochs,
            "classes": list(data.classes),
            "image_size": settings["image_size"],
            "dataset": settings["dataset"],
            "train_examples": len(data.train_labels),
        },
    )
    # The one evaluation on the test split.
    probabilities = model.probabilities(data.test_images)
    picked = probabilities[np.arange(len(data.test_labels)), data.test_labels]
    test_loss = float(-np.log(np.clip(picked, 1e-12, None)).mean()) + 0.0  # + 0.0: no "-0.0" in the CSV
    confusion = confusion_matrix(data.test_labels, probabilities.argmax(1), len(data.classes))
    summary, per_class = classification_metrics(confusion, data.classes)
    metrics = {
        "trial_id": trial_id,
        "rank": rank,
        "seed": config["seed"],
        "epochs": epochs,
        "test_acc": summary["test_acc"],
        "test_loss": test_loss,
        "test_balanced_acc": summary["test_balanced_acc"],
        "test_macro_f1": summary["test_macro_f1"],
        "test_examples": len(data.test_labels),
        "train_examples": len(data.train_labels),
        "retrain_time_s": round(train_time, 2),
    }
    write_text(directory / "per_class.csv", per_class.to_csv(index=False))
    write_text(directory / "confusion.csv", _confusion_table(confusion, data.classes).to_csv())
    plot_confusion(confusion, data.classes, directory / "confusion.png", f"trial {trial_id}, seed {config['seed']}: test")
    for key in SUMMARY_METRICS:
        writer.add_scalar(key, metrics[key], global_step=epochs)
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
    for entry in hparams(values | {"retrained": "yes"}, {k: metrics[k] for k in SUMMARY_METRICS}):
        writer.file_writer.add_summary(entry)
    writer.close()
    write_json(directory / "metrics.json", metrics)
    return metrics


def _confusion_table(confusion: np.ndarray, classes) -> pd.DataFrame:
    return pd.DataFrame(confusion, index=pd.Index(list(classes), name="true"), columns=list(classes))


def _summarize(models: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for trial_id, group in models.groupby("trial_id", sort=False):
        entry = board.set_index(board["trial_id"].astype(str)).loc[str(trial_id)]
        row = {
            "rank": int(entry["rank"]),
            "trial_id": trial_id,
            "val_acc": entry["val_acc"],
            "val_loss": entry["val_loss"],
            "best_epoch": int(entry["best_epoch"]),
            "seeds": len(group),
        }
        for key in SUMMARY_METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(group[key])
        row["retrain_time_s"] = round(float(group["retrain_time_s"].sum()), 2)
        rows.append(row)
    return pd.DataFrame(rows).sort_values("rank").reset_index(drop=True)


def _write_per_trial(root: Path, models: pd.DataFrame) -> None:
    from analysis.plots import plot_confusion

    for trial_id, group in models.groupby("trial_id", sort=False):
        directories = [root / f"{trial_id}-seed{seed}" for seed in group["seed"]]
        per_class = [pd.read_csv(d / "per_class.csv") for d in directories]
        table = per_class[0][["class", "support"]].copy()
        for key in ("precision", "recall", "f1"):
            stacked = np.stack([p[key].to_numpy() for p in per_class])
            table[f"{key}_mean"] = stacked.mean(0)
            table[f"{key}_std"] = stacked.std(0, ddof=1) if len(stacked) > 1 else 0.0
        write_text(root / f"{trial_id}-per_class.csv", table.to_csv(index=False))
        confusions = [pd.read_csv(d / "confusion.csv", index_col=0) for d in directories]
        total = sum(c.to_numpy() for c in confusions)
        classes = [str(c) for c in confusions[0].columns]
        write_text(root / f"{trial_id}-confusion.csv", _confusion_table(total, classes).to_csv())
        plot_confusion(total, classes, root / f"{trial_id}-confusion.png", f"trial {trial_id}: test, summed over {len(group)} seed(s)")


def retrained_models(run_dir: Path, trial_id: str | None = None) -> list[Path]:
    """Directories of the stored retrained models of ``trial_id`` (default: the best retrained trial)."""
    run_dir = Path(run_dir)
    results = run_dir / "test_results.csv"
    if not results.is_file():
        raise FileNotFoundError(
            f"run {str(run_dir)!r} has no retrained model ({results} is missing): "
            f"run `python -m search retrain {run_dir}` first"
        )
    if trial_id is None:
        trial_id = str(pd.read_csv(results, dtype={"trial_id": str})["trial_id"].iloc[0])
    models = pd.read_csv(run_dir / "retrain" / "models.csv", dtype={"trial_id": str})
    seeds = models.loc[models["trial_id"] == trial_id, "seed"].tolist()
    directories = [run_dir / "retrain" / f"{trial_id}-seed{seed}" for seed in seeds]
    missing = [d for d in directories if not (d / "model.pt").is_file()]
    if not directories or missing:
        raise FileNotFoundError(
            f"retrained weights of trial {trial_id} are missing in {run_dir / 'retrain'}"
            f"{f' (e.g. {missing[0]})' if missing else ''}: run `python -m search retrain {run_dir} --force`"
        )
    return directories


def load_classifier(directory: Path):
    """A retrained model from its directory: ``trainables.classifier.Classifier`` in eval mode."""
    import torch

    from trainables.classifier import build_classifier

    built = read_json(Path(directory) / "model.json")
    state = torch.load(Path(directory) / "model.pt", map_location="cpu", weights_only=True)
    model = build_classifier(built["config"], tuple(built["classes"]), state_dict=state)
    model.net.eval()
    return model


def format_test_summary(table: pd.DataFrame) -> str:
    """One line per retrained trial: validation score next to test accuracy, mean ± std."""
    lines = []
    for _, row in table.iterrows():
        lines.append(
            f"trial {row['trial_id']} (rank {row['rank']}): val_acc {row['val_acc']:.4f} | "
            f"test accuracy {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f} over {row['seeds']} seed(s), "
            f"balanced {row['test_balanced_acc_mean']:.4f} ± {row['test_balanced_acc_std']:.4f} | "
            f"retrained in {row['retrain_time_s']:.1f} s"
        )
    return "\n".join(lines)

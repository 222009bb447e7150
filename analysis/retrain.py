"""Retrain the winners on train + validation, then evaluate each model once on the held-out test split.

    python -m search retrain RUN_DIR [--top-k 1] [--seeds 3] [--force] [--no-tta] [--ensemble]

For each of the top-k trials of the leaderboard, S models are trained in this process (no Ray) on
the train and validation images together, for the epoch count at which the trial reached its best
validation score (the learning-rate schedule keeps the trial's horizon, so the models replay the
trial's first ``best_epoch`` epochs on more data), with seeds ``seed, seed + 1, ...`` (the first is
the trial's own). Each model is evaluated once on the test split, which no trial ever saw and which
nothing but this module reads.

A features trial (``trainables/features.py``) is retrained the same way: its classifier is fitted
on the train + validation features, per seed (a random forest differs per seed; logistic regression
and the SVM do not). Its estimator is not saved (scikit-learn persists only through pickle, which
this project never loads); ``model.json`` holds what refits it deterministically, and ``predict``
refits it, checking that the refit reproduces the stored probabilities of the first training images.

A streamed run (``split.json``'s ``loading`` "stream") is retrained from the data cache: the
images are views of its memory-mapped shards (``FinalData.loading``), the final models train
through the streaming path its trials used (``fit_classifier(..., stream=True)``: the same
batches, so the same models as in memory), and every evaluation reads the test images in batches
(``analysis/batches.py``), so no copy of the set is made. The cache must be intact:
``trainables.cache.CacheDamaged`` (exit 2) names a missing or damaged shard and the command that
decodes it again (``--rebuild-cache``), before anything is written.

Classic baselines on the same split (``analysis/baseline.py``): logistic regression and a
CV-tuned RBF SVC on the pixels, and a linear probe for a pretrained winner; test_results.csv and
the summary compare the winner with the strongest of them.

Flip TTA (on unless ``tta=False``): each model is also evaluated on the test split with horizontal
test-time augmentation, the mean of the softmax of each image and of its mirror image, reported
beside the plain numbers (``test_acc_tta``...). It is a measurement, not a choice made on the test
split: where mirroring changes the class (digits, text) it is expected to hurt.

Ensemble (``ensemble=True``, needs ``top_k >= 2``): the probabilities of the top-k trials' models,
averaged, against the single best trial's model, on the same test split, from each model's stored
test probabilities. Rows: the best trial's first-seed model; the mean of the top-k trials' first-seed
models (one model per trial, the trial's own seed); with several seeds also the best trial's seeds
averaged and all k x S models averaged. What it writes::

    RUN_DIR/test_results.csv               one row per retrained trial: test metrics, mean and std over seeds
    RUN_DIR/ensemble.csv                   --ensemble: single best vs. ensembles (test_acc, test_balanced_acc, test_loss, members)
    RUN_DIR/retrain/models.csv             one row per model (trial x seed)
    RUN_DIR/retrain/baselines.json, .csv   the classic baselines: test metrics, images, features, time
    RUN_DIR/retrain/<trial>-per_class.csv  precision, recall, F1 per class, mean and std over seeds
    RUN_DIR/retrain/<trial>-confusion.csv  confusion matrix summed over seeds (rows: true, columns: predicted)
    RUN_DIR/retrain/<trial>-confusion.png
    RUN_DIR/retrain/<trial>-seed<n>/
      model.pt                             state dict (torch.load(..., weights_only=True)); not for features trials
      model.json                           the trainable, config, classes and image size that rebuild it
      test_probabilities.npy               (test images, classes) softmax; test_probabilities_tta.npy with flip TTA
      metrics.json, per_class.csv, confusion.csv, events.out.tfevents.*   this model's test results

A second call reuses every model already evaluated (the test split is read once per model), unless
``force`` is set; a model stored without the flip-TTA evaluation that is now asked for is retrained.
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

from analysis.batches import batched_probabilities, flip_horizontal
from analysis.records import RunDir, read_json, read_trials, trial_dir, write_json, write_text
from trainables import TRAINABLES, Trainable

__all__ = [
    "FinalData",
    "classification_metrics",
    "confusion_matrix",
    "ensemble_table",
    "flip_horizontal",
    "format_ensemble",
    "format_test_summary",
    "load_classifier",
    "load_final_data",
    "load_retrained",
    "mean_std",
    "retrain",
    "retrained_models",
    "tta_probabilities",
    "with_baselines",
]

# The test metrics of one model that test_results.csv summarises as mean and std over seeds.
SUMMARY_METRICS = ("test_acc", "test_loss", "test_balanced_acc", "test_macro_f1")
# The same with flip TTA; NaN when the retrain ran without it.
TTA_METRICS = ("test_acc_tta", "test_loss_tta", "test_balanced_acc_tta")
# Columns of retrain/models.csv: one row per retrained model.
MODEL_COLUMNS = (
    "trial_id", "rank", "seed", "epochs", *SUMMARY_METRICS, *TTA_METRICS, "test_examples", "train_examples", "retrain_time_s",
    "data_loading",
)  # fmt: skip
# The untuned classic baseline's columns of test_results.csv (the same on every row: one per run);
# with_baselines adds every baseline's and the strongest's.
BASELINE_COLUMNS = ("baseline", "baseline_test_acc", "baseline_test_balanced_acc")


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
    # "stream": the images are views of the data cache (trainables.cache.ImageView), read in
    # batches by the refit (as a streamed trial reads them) and by every evaluation; "memory": arrays.
    loading: str = "memory"


def load_final_data(run_dir: Path, rebuild_cache: bool = False) -> FinalData:
    """The run's data set, split as recorded in ``split.json``: train + validation, and test.

    The only reader of the test split (trials get ``analysis.rerun.load_trial_data``, which has none,
    and ``predict`` gets ``_load_final_data(run_dir, with_test=False)``). A streamed run's images
    stay in the data cache (views, ``loading="stream"``); the cache must be intact unless
    ``rebuild_cache`` (``trainables.cache.CacheDamaged`` names the shard and the command).
    """
    return _load_final_data(run_dir, with_test=True, rebuild_cache=rebuild_cache)


def _load_final_data(run_dir: Path, with_test: bool, rebuild_cache: bool = False, command: str = "retrain") -> FinalData:
    from analysis.rerun import load_run_images
    from trainables.cache import CachedImages, ImageView

    # Refuses files changed since the split, and a cache gone or damaged since the search.
    images, split, loading = load_run_images(run_dir, rebuild_cache=rebuild_cache, command=command)
    train = np.union1d(np.asarray(split["train"], dtype=np.int64), np.asarray(split["val"], dtype=np.int64))
    test = np.asarray(split["test"] if with_test else [], dtype=np.int64)
    overlap = np.intersect1d(train, test)
    if len(overlap):
        raise ValueError(f"{Path(run_dir) / 'split.json'}: {len(overlap)} test indices are also train/val, e.g. {overlap[:5].tolist()}")
    streamed = loading == "stream" and isinstance(images.images, CachedImages)
    pick = (lambda index: ImageView(images.images, index)) if streamed else (lambda index: images.images[index])  # noqa: E731
    return FinalData(
        train_images=pick(train),
        train_labels=images.labels[train],
        test_images=pick(test),
        test_labels=images.labels[test],
        classes=images.classes,
        train_indices=train,
        test_indices=test,
        loading="stream" if streamed else "memory",
    )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows true class, columns predicted class (scikit-learn's, over every class)."""
    from sklearn.metrics import confusion_matrix as sklearn_confusion

    return sklearn_confusion(np.asarray(labels), np.asarray(predictions), labels=np.arange(num_classes))


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, classes: tuple[str, ...]
) -> tuple[dict[str, float], pd.DataFrame]:
    """Accuracy, balanced accuracy and macro F1, and per-class precision, recall, F1 and support.

    scikit-learn's metrics: a class never predicted has precision 0, a class absent from the
    labels recall 0 (``zero_division=0``); balanced accuracy and macro F1 average over the classes
    present in ``labels``.
    """
    import warnings

    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support

    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    everyone = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=everyone, zero_division=0
    )
    per_class = pd.DataFrame(
        {"class": list(classes), "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    )
    present = np.unique(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true": recall over present ones
        balanced = float(balanced_accuracy_score(labels, predictions)) if len(labels) else 0.0
    summary = {
        "test_acc": float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "test_balanced_acc": balanced,
        "test_macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0))
        if len(present)
        else 0.0,
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
    tta: bool = True,
    ensemble: bool = False,
    rebuild_cache: bool = False,
) -> pd.DataFrame:
    """Retrain and test the top ``top_k`` trials, ``seeds`` models each; return test_results.csv's table.

    ``tta``: also evaluate each model with flip TTA (columns ``*_tta``). ``ensemble``: also write
    ``ensemble.csv``, the top-k trials' models averaged against the single best (``top_k >= 2``).
    ``rebuild_cache``: decode the run's data cache again if it is gone or damaged (else
    ``trainables.cache.CacheDamaged``, before anything is written).
    """
    from analysis.leaderboard import build_leaderboard

    run_dir = Path(run_dir)
    run = RunDir.open(run_dir)
    if top_k < 1:
        raise ValueError(f"The value of `top_k` is {top_k}, but must be an integer >= 1.")
    if seeds < 1:
        raise ValueError(f"The value of `seeds` is {seeds}, but must be an integer >= 1.")
    if ensemble and top_k < 2:
        raise ValueError(f"`ensemble` averages the top-k trials' models, so `top_k` must be >= 2, but it is {top_k} (e.g. --top-k 3 --ensemble).")
    recorded = run.settings()
    settings = recorded.to_dict() | {"mode": recorded.mode}
    board = build_leaderboard(run_dir)
    ranked = board[board["rank"].notna() & (board["status"] != "error")]
    records = read_trials(run_dir)
    if len(ranked) < top_k:
        raise ValueError(
            f"`top_k` is {top_k}, but run {str(run_dir)!r} has {len(ranked)} scored trial(s): use --top-k {max(1, len(ranked))}"
            if len(ranked)
            else f"run {str(run_dir)!r} has no trial with a {settings['metric']} score to retrain"
        )
    chosen = []
    for _, entry in ranked.head(top_k).iterrows():
        recorded = read_json(trial_dir(run_dir, str(entry["trial_id"])) / "config.json")
        trainable = recorded.get("trainable", "classifier")
        if trainable not in TRAINABLES:  # a custom "package.module:function" trainable has no refit
            raise ValueError(
                f"trial {entry['trial_id']} ran trainable {trainable!r}; retrain knows how to refit {sorted(TRAINABLES)} only"
            )
        chosen.append((entry, recorded, TRAINABLES[trainable]))
    threads = threads or os.cpu_count() or 1
    root = run_dir / "retrain"
    data: FinalData | None = None
    rows, reused, started = [], 0, time.monotonic()
    for entry, recorded, trainable in chosen:
        trial_id = str(entry["trial_id"])
        epochs = int(entry["best_epoch"])
        # The rates the trial ran at: lr_schedule "plateau" replays them (fit_classifier).
        record = next(r for r in records if r.trial_id == trial_id)
        lrs = [m["lr"] for m in record.metrics if "lr" in m]
        started_as, later = pbt_schedule(recorded, record.lineage)
        for k in range(seeds):
            config = started_as | {"threads": threads}
            config["seed"] = int(config.get("seed", 0)) + k
            directory = root / f"{trial_id}-seed{config['seed']}"
            stored = _stored(directory, trainable, config, epochs, tta)
            if stored is not None and not force:
                rows.append(stored)
                reused += 1
                continue
            if data is None:
                data = _announced(run_dir, rebuild_cache, out)
            what = trainable.refit_summary.format(epochs=epochs)  # "2 epoch(s)", "classifier fitted on frozen features"
            out(f"retrain: trial {trial_id} (rank {int(entry['rank'])}), seed {config['seed']}, {what}")
            replay = [(first, later_config | {"threads": threads, "seed": config["seed"]}) for first, later_config in later]
            rows.append(_train_and_test(directory, trial_id, int(entry["rank"]), trainable, config, epochs, data, settings, tta, lrs, replay))
    if data is None:  # the baselines read it: a damaged cache fails here, before anything is written
        data = _announced(run_dir, rebuild_cache, out)
    models = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    write_text(root / "models.csv", models.to_csv(index=False))
    table = _summarize(models, board)
    # Classic baselines on the same split, the winner against the strongest (analysis/baseline.py).
    from analysis.baseline import fit_baselines

    baselines = fit_baselines(root, data, chosen[0][1]["config"], threads=threads, force=force, out=out)
    table = with_baselines(table, baselines, _comparison_metric(settings["metric"]))
    write_text(run_dir / "test_results.csv", table.to_csv(index=False))
    _write_per_trial(root, models)
    out(
        f"retrain: {len(models)} model(s) ({reused} reused from an earlier retrain; --force retrains them) "
        f"in {time.monotonic() - started:.1f} s; test results: {run_dir / 'test_results.csv'}"
    )
    if (run_dir / "mlflow.json").is_file():  # the search was tracked in MLflow: so is its winner
        from analysis.tracking import log_retrain

        try:
            logged = log_retrain(run_dir, table, models)
            out(f"retrain: logged to MLflow, run(s) {', '.join(logged)}")
        except Exception as error:  # noqa: BLE001 (tracking never loses the test results written above)
            out(f"retrain: MLflow logging failed ({type(error).__name__}: {error}); the results above are written")
    if ensemble:
        labels = data.test_labels
        members = [[root / f"{trial_id}-seed{seed}" for seed in group["seed"]] for trial_id, group in models.groupby("trial_id", sort=False)]
        compared = ensemble_table(members, labels, tta=tta)
        write_text(run_dir / "ensemble.csv", compared.to_csv(index=False))
        out(format_ensemble(compared))
        out(f"ensemble: {run_dir / 'ensemble.csv'}")
    return table


def _announced(run_dir: Path, rebuild_cache: bool, out: Callable[[str], None]) -> FinalData:
    data = load_final_data(run_dir, rebuild_cache=rebuild_cache)
    how = "streamed from the data cache in batches" if data.loading == "stream" else "in memory"
    out(f"retrain: {len(data.train_labels)} train+validation images, {len(data.test_labels)} test images ({how}; "
        "the test split is read once per model)")  # fmt: skip
    return data


def _comparison_metric(metric: str) -> str:
    """The test metric the winner and the baselines are compared on, for the run's ``metric``."""
    return "test_balanced_acc" if metric == "val_balanced_acc" else "test_acc"


def with_baselines(table: pd.DataFrame, baselines: list[dict], metric: str = "test_acc") -> pd.DataFrame:
    """test_results.csv's table with the baselines' columns (the same on every row): each baseline's
    test accuracy (``<baseline>_test_acc``); the strongest (``strongest_baseline*``) on ``metric``
    and whether the row's model beat it (its mean over seeds above it); and ``baseline*``, the
    untuned reference of earlier versions (linear probe for a pretrained winner, else logistic
    regression on pixels)."""
    from analysis.baseline import strongest

    table = table.copy()
    reference = baselines[-1] if baselines[-1]["baseline"] == "linear_probe" else baselines[0]
    table["baseline"] = reference["name"]
    table["baseline_test_acc"] = reference["test_acc"]
    table["baseline_test_balanced_acc"] = reference["test_balanced_acc"]
    for row in baselines:
        table[f"{row['baseline']}_test_acc"] = row["test_acc"]
    best = strongest(baselines, metric)
    table["strongest_baseline"] = best["name"]
    table["strongest_baseline_metric"] = metric
    table["strongest_baseline_test_acc"] = best["test_acc"]
    table["strongest_baseline_test_balanced_acc"] = best["test_balanced_acc"]
    table["beats_strongest_baseline"] = table[f"{metric}_mean"] > best[metric]
    table.attrs["baselines"] = baselines  # for format_test_summary (not written to the CSV)
    return table


def tta_probabilities(
    probabilities: Callable[[np.ndarray], np.ndarray], images: np.ndarray, plain: np.ndarray | None = None
) -> np.ndarray:
    """Flip TTA: the mean of the class probabilities of each image and of its mirror image.

    ``plain``: ``probabilities(images)`` when the caller has it already (not computed twice)."""
    plain = probabilities(images) if plain is None else plain
    return (plain + probabilities(flip_horizontal(images))) / 2.0


def _stored(directory: Path, trainable: Trainable, config: dict, epochs: int, tta: bool) -> dict | None:
    needed = ["model.json", "metrics.json", "test_probabilities.npy", *trainable.stored_files]
    needed += ["test_probabilities_tta.npy"] if tta else []
    if not all((directory / name).is_file() for name in needed):
        return None
    built = read_json(directory / "model.json")
    if built["epochs"] != epochs or built.get("trainable", "classifier") != trainable.name or {
        k: v for k, v in built["config"].items() if k != "threads"
    } != {k: v for k, v in config.items() if k != "threads"}:
        return None
    metrics = read_json(directory / "metrics.json")
    if not tta:  # evaluated with TTA before, not asked for now: leave it out of this summary
        metrics = {key: value for key, value in metrics.items() if key not in TTA_METRICS}
    return metrics


def _test_metrics(probabilities: np.ndarray, labels: np.ndarray, classes) -> tuple[dict, np.ndarray, pd.DataFrame]:
    """Accuracy, loss, balanced accuracy and macro F1 of class probabilities; confusion; per class."""
    from trainables.features import log_loss

    test_loss = log_loss(probabilities, labels)
    predictions = probabilities.argmax(1)
    confusion = confusion_matrix(labels, predictions, len(classes))
    summary, per_class = classification_metrics(labels, predictions, classes)
    return summary | {"test_loss": test_loss}, confusion, per_class


def pbt_schedule(recorded: dict, lineage: dict) -> tuple[dict, list[tuple[int, dict]]]:
    """A trial's config at epoch 1 and its later ``(first epoch, config)``, from its config.json
    and lineage.json. A PBT clone's weights began as its lineage's first config (an ancestor's),
    then changed config where the schedule says; any other trial keeps its own config throughout."""
    if not lineage.get("schedule"):
        return dict(recorded["config"]), []
    base = {k: v for k, v in recorded["config"].items() if k not in recorded["params"]}  # the run's trial settings
    segments = [(segment["from_epoch"], base | segment["config"]) for segment in lineage["schedule"]]
    return segments[0][1], segments[1:]


def _train_and_test(
    directory: Path, trial_id: str, rank: int, trainable: Trainable, config: dict, epochs: int, data: FinalData, settings: dict, tta: bool, lrs: list[float],
    replay: list[tuple[int, dict]] = (),
) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    from analysis.plots import plot_confusion

    if directory.exists():
        shutil.rmtree(directory)  # --force, or a model from another config: start clean
    directory.mkdir(parents=True)
    writer = SummaryWriter(log_dir=str(directory))
    built = {
        "trial_id": trial_id,
        "trainable": trainable.name,
        "config": config,
        "epochs": epochs,
        "classes": list(data.classes),
        "image_size": settings["image_size"],
        "dataset": settings["dataset"],
        "train_examples": len(data.train_labels),
        "data_loading": data.loading,  # "stream": refitted and evaluated batch by batch from the cache
    }
    if replay:
        built["pbt_schedule"] = [{"from_epoch": first, "config": later} for first, later in replay]

    def report(metrics: dict) -> None:
        for key in ("train_loss", "train_acc", "lr"):
            writer.add_scalar(key, metrics[key], global_step=metrics["epoch"])

    fit = trainable.resolve("fit")
    began = time.perf_counter()
    model = fit(
        config, data.train_images, data.train_labels, data.classes, epochs=epochs, report=report, lr_per_epoch=lrs,
        pbt_schedule=replay, stream=data.loading == "stream",
    )
    train_time = time.perf_counter() - began
    # Its weights (trainable.stored_files), or what a refit is checked against (a features model).
    built |= model.save(directory)
    write_json(directory / "model.json", built)
    # The one evaluation on the test split (with flip TTA: the same images, mirrored, as well),
    # batch by batch: each batch of test images is read once for both.
    probabilities, flipped = batched_probabilities(model.probabilities, data.test_images, tta=tta)
    np.save(directory / "test_probabilities.npy", probabilities, allow_pickle=False)
    summary, confusion, per_class = _test_metrics(probabilities, data.test_labels, data.classes)
    metrics = {
        "trial_id": trial_id,
        "rank": rank,
        "seed": config["seed"],
        "epochs": epochs,
        **{key: summary[key] for key in SUMMARY_METRICS},
        "test_examples": len(data.test_labels),
        "train_examples": len(data.train_labels),
        "retrain_time_s": round(train_time, 2),
        "data_loading": data.loading,
    }
    if tta:
        np.save(directory / "test_probabilities_tta.npy", flipped, allow_pickle=False)
        with_tta, _, _ = _test_metrics(flipped, data.test_labels, data.classes)
        metrics |= {f"{key}_tta": with_tta[key] for key in ("test_acc", "test_loss", "test_balanced_acc")}
    write_text(directory / "per_class.csv", per_class.to_csv(index=False))
    write_text(directory / "confusion.csv", _confusion_table(confusion, data.classes).to_csv())
    plot_confusion(confusion, data.classes, directory / "confusion.png", f"trial {trial_id}, seed {config['seed']}: test")
    logged = [key for key in (*SUMMARY_METRICS, *TTA_METRICS) if key in metrics]
    for key in logged:
        writer.add_scalar(key, metrics[key], global_step=epochs)
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
    for entry in hparams(values | {"retrained": "yes"}, {k: metrics[k] for k in logged}):
        writer.file_writer.add_summary(entry)
    writer.close()
    write_json(directory / "metrics.json", metrics)
    return metrics


def ensemble_table(members: list[list[Path]], labels: np.ndarray, tta: bool = False) -> pd.DataFrame:
    """Single best model against averaged ensembles, from the models' stored test probabilities.

    ``members[i]`` are the directories of the i-th ranked trial's models, its first seed first.
    Rows: the best trial's first model; the top-k trials' first models averaged (one per trial);
    with several seeds, the best trial's models averaged and every model averaged.
    """
    labels = np.asarray(labels)
    candidates = [("single best", members[0][:1]), (f"ensemble of top {len(members)} (first seed each)", [m[0] for m in members])]
    if max(len(m) for m in members) > 1:
        candidates.insert(1, (f"best trial, {len(members[0])} seeds averaged", members[0]))
        every = [d for m in members for d in m]
        candidates.append((f"ensemble of top {len(members)} x all seeds ({len(every)} models)", every))
    rows = []
    for name, directories in candidates:
        row = {"model": name, "n_models": len(directories)}
        for suffix in ("", "_tta") if tta else ("",):
            probabilities = np.mean([np.load(d / f"test_probabilities{suffix}.npy", allow_pickle=False) for d in directories], axis=0)
            summary, _, _ = _test_metrics(probabilities, labels, tuple(str(c) for c in range(probabilities.shape[1])))
            row |= {f"test_acc{suffix}": summary["test_acc"], f"test_balanced_acc{suffix}": summary["test_balanced_acc"], f"test_loss{suffix}": summary["test_loss"]}
        row["members"] = " + ".join(d.name for d in directories)
        rows.append(row)
    return pd.DataFrame(rows)


def format_ensemble(table: pd.DataFrame) -> str:
    """The ensemble comparison as aligned text; the member lists are in ensemble.csv."""
    shown = table.drop(columns=["members"])
    return "ensemble vs. single best, same test split:\n" + shown.to_string(index=False, float_format=lambda x: f"{x:.4f}")


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
            # The imbalanced workflow ranks by it; the test side has test_balanced_acc.
            "val_balanced_acc": entry.get("val_balanced_acc", float("nan")),
            "best_epoch": int(entry["best_epoch"]),
            "seeds": len(group),
        }
        for key in (*SUMMARY_METRICS, *TTA_METRICS):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(group[key])  # NaN for TTA when it did not run
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
    missing = [d for d in directories if not _restorable(d)]
    if not directories or missing:
        raise FileNotFoundError(
            f"retrained models of trial {trial_id} are missing in {run_dir / 'retrain'}"
            f"{f' (e.g. {missing[0]})' if missing else ''}: run `python -m search retrain {run_dir} --force`"
        )
    return directories


def _restorable(directory: Path) -> bool:
    if not (directory / "model.json").is_file():
        return False
    entry = TRAINABLES.get(read_json(directory / "model.json").get("trainable", "classifier"))
    return entry is not None and all((directory / name).is_file() for name in entry.stored_files)


def load_retrained(run_dir: Path, directory: Path, rebuild_cache: bool = False):
    """A retrained model, with ``probabilities(images)`` and ``classes``, whatever its trainable.

    Its trainable's ``load`` rebuilds it: a classifier from its weights; a features model is
    refitted on the run's train + validation images (never the test split), and the refit must
    reproduce the probabilities the retrain stored for the first training images, else ValueError
    says why it cannot be trusted.
    """
    from trainables import get_entry

    built = read_json(Path(directory) / "model.json")
    load = get_entry(built.get("trainable", "classifier")).resolve("load")

    def train_data() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        data = _load_final_data(run_dir, with_test=False, rebuild_cache=rebuild_cache, command="predict")
        return data.train_images, data.train_labels, data.classes

    return load(Path(directory), built, train_data)


def load_classifier(directory: Path):
    """A retrained model from its directory: ``trainables.classifier.Classifier`` in eval mode."""
    from trainables.classifier import load_classifier as load

    return load(Path(directory), read_json(Path(directory) / "model.json"))


def format_test_summary(table: pd.DataFrame) -> str:
    """One line per retrained trial: validation score next to test accuracy, mean ± std."""
    lines = []
    for _, row in table.iterrows():
        lines.append(
            f"trial {row['trial_id']} (rank {row['rank']}): val_acc {row['val_acc']:.4f}"
            + (
                f", balanced {row['val_balanced_acc']:.4f}"
                if "val_balanced_acc" in row and not pd.isna(row["val_balanced_acc"])
                else ""
            )
            + " | "
            + f"test accuracy {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f} over {row['seeds']} seed(s), "
            f"balanced {row['test_balanced_acc_mean']:.4f} ± {row['test_balanced_acc_std']:.4f} | "
            f"retrained in {row['retrain_time_s']:.1f} s"
            + (
                f" | flip TTA {row['test_acc_tta_mean']:.4f} ± {row['test_acc_tta_std']:.4f}"
                if "test_acc_tta_mean" in row and not pd.isna(row["test_acc_tta_mean"])
                else ""
            )
        )
    if len(table) and table.attrs.get("baselines"):  # with_baselines put them there
        lines += _baseline_summary(table.iloc[0], table.attrs["baselines"])
    elif len(table) and "baseline_test_acc" in table:
        row = table.iloc[0]
        lines.append(
            f"baseline ({row['baseline']}, same split): test accuracy {row['baseline_test_acc']:.4f}, "
            f"balanced {row['baseline_test_balanced_acc']:.4f} | winner {row['test_acc_mean']:.4f} "
            f"({row['test_acc_mean'] - row['baseline_test_acc']:+.4f})"
        )
    return "\n".join(lines)


def _baseline_summary(row: pd.Series, baselines: list[dict]) -> list[str]:
    """Each baseline, one line, then the winner against the strongest."""
    from analysis.baseline import format_baselines

    metric = row.get("strongest_baseline_metric", "test_acc")
    return format_baselines(baselines, row[f"{metric}_mean"], row[f"{metric}_std"], int(row["seeds"]), metric)

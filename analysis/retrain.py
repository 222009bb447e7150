"""Retrain the winners on train + validation, then evaluate each model once on the held-out test split.

    python -m search retrain RUN_DIR [--top-k 1] [--seeds 3] [--force] [--no-tta] [--ensemble] [--rebuild-cache]

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

The jobs beside this orchestration: final_data.py (the data, the only reader of the test split),
evaluate.py (the test metrics, flip TTA), batches.py (evaluation batch by batch), store.py (the stored models), ensemble.py, baseline.py.

A second call reuses every model already evaluated (the test split is read once per model), unless
``force`` is set; a model stored without the flip-TTA evaluation that is now asked for is retrained.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.baseline import fit_baselines, format_baselines, strongest
from analysis.batches import batched_probabilities
from analysis.ensemble import ensemble_table, format_ensemble
from analysis.evaluate import confusion_table, mean_std, probability_metrics
from analysis.events import EventFile
from analysis.final_data import FinalData, load_final_data
from analysis.leaderboard import build_leaderboard
from analysis.plots import plot_confusion
from analysis.records import RunDir, TrialStatus, read_json, read_trials, trial_dir, write_json, write_text
from analysis.store import TTA_METRICS, stored_metrics
from trainables import DEFAULT_TRAINABLE, TRAINABLES, Trainable

__all__ = ["format_test_summary", "pbt_schedule", "retrain", "with_baselines"]

# The test metrics of one model that test_results.csv summarises as mean and std over seeds.
SUMMARY_METRICS = ("test_acc", "test_loss", "test_balanced_acc", "test_macro_f1")
# Columns of retrain/models.csv: one row per retrained model.
MODEL_COLUMNS = (
    "trial_id", "rank", "seed", "epochs", *SUMMARY_METRICS, *TTA_METRICS, "test_examples", "train_examples", "retrain_time_s",
    "data_loading",
)  # fmt: skip
# The untuned classic baseline's columns of test_results.csv (the same on every row: one per run);
# with_baselines adds every baseline's and the strongest's.
BASELINE_COLUMNS = ("baseline", "baseline_test_acc", "baseline_test_balanced_acc")


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
    run_dir = Path(run_dir)
    run = RunDir.open(run_dir)
    if top_k < 1:
        raise ValueError(f"The value of `top_k` is {top_k}, but must be an integer >= 1.")
    if seeds < 1:
        raise ValueError(f"The value of `seeds` is {seeds}, but must be an integer >= 1.")
    if ensemble and top_k < 2:
        raise ValueError(f"`ensemble` averages the top-k trials' models, so `top_k` must be >= 2, but it is {top_k} (e.g. --top-k 3 --ensemble).")
    recorded = run.settings()
    settings = recorded.as_record()
    board = build_leaderboard(run_dir)
    ranked = board[board["rank"].notna() & ~board["status"].map(lambda text: TrialStatus.of(text).is_failed())]
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
        trainable = recorded.get("trainable", DEFAULT_TRAINABLE)
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
            stored = stored_metrics(directory, trainable, config, epochs, tta)
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
    if data is None:  # every model reused; the baselines read it: a damaged cache fails here, before anything is written
        data = load_final_data(run_dir, rebuild_cache=rebuild_cache)
    models = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    write_text(root / "models.csv", models.to_csv(index=False))
    table = _summarize(models, board)
    # Classic baselines on the same split, the winner against the strongest (analysis/baseline.py).
    baselines = fit_baselines(root, data, chosen[0][1]["config"], threads=threads, force=force, out=out)
    table = with_baselines(table, baselines, _comparison_metric(settings["metric"]))
    write_text(run_dir / "test_results.csv", table.to_csv(index=False))
    _write_per_trial(root, models)
    out(
        f"retrain: {len(models)} model(s) ({reused} reused from an earlier retrain; --force retrains them) "
        f"in {time.monotonic() - started:.1f} s; test results: {run_dir / 'test_results.csv'}"
    )
    if (run_dir / "mlflow.json").is_file():  # the search was tracked in MLflow: so is its winner
        from analysis.tracking import log_retrain  # imports MLflow: only for a tracked run

        try:
            logged = log_retrain(run_dir, table, models)
            out(f"retrain: logged to MLflow, run(s) {', '.join(logged)}")
        except Exception as error:  # noqa: BLE001 (tracking never loses the test results written above)
            out(f"retrain: MLflow logging failed ({type(error).__name__}: {error}); the results above are written")
    if ensemble:
        labels = data.test_labels  # loaded above for the baselines
        members = [[root / f"{trial_id}-seed{seed}" for seed in group["seed"]] for trial_id, group in models.groupby("trial_id", sort=False)]
        compared = ensemble_table(members, labels, tta=tta)
        write_text(run_dir / "ensemble.csv", compared.to_csv(index=False))
        out(format_ensemble(compared))
        out(f"ensemble: {run_dir / 'ensemble.csv'}")
    return table


def _announced(run_dir: Path, rebuild_cache: bool, out: Callable[[str], None]) -> FinalData:
    data = load_final_data(run_dir, rebuild_cache=rebuild_cache)
    how = "streamed from the data cache in batches" if data.loading == "stream" else "in memory"
    out(f"retrain: {len(data.train_labels)} train+validation images, {len(data.test_labels)} test images (read now, {how}; "
        "the test split once per model)")  # fmt: skip
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
    if directory.exists():
        shutil.rmtree(directory)  # --force, or a model from another config: start clean
    directory.mkdir(parents=True)
    events = EventFile(directory)
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
            events.scalar(key, metrics[key], step=metrics["epoch"])

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
    summary, confusion, per_class = probability_metrics(probabilities, data.test_labels, data.classes)
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
        with_tta, _, _ = probability_metrics(flipped, data.test_labels, data.classes)
        metrics |= {f"{key}_tta": with_tta[key] for key in ("test_acc", "test_loss", "test_balanced_acc")}
    write_text(directory / "per_class.csv", per_class.to_csv(index=False))
    write_text(directory / "confusion.csv", confusion_table(confusion, data.classes).to_csv())
    plot_confusion(confusion, data.classes, directory / "confusion.png", f"trial {trial_id}, seed {config['seed']}: test")
    logged = [key for key in (*SUMMARY_METRICS, *TTA_METRICS) if key in metrics]
    for key in logged:
        events.scalar(key, metrics[key], step=epochs)
    events.hparams(config | {"retrained": "yes"}, {k: metrics[k] for k in logged})
    events.close()
    write_json(directory / "metrics.json", metrics)
    return metrics


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
        write_text(root / f"{trial_id}-confusion.csv", confusion_table(total, classes).to_csv())
        plot_confusion(total, classes, root / f"{trial_id}-confusion.png", f"trial {trial_id}: test, summed over {len(group)} seed(s)")


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
        row = table.iloc[0]
        metric = row.get("strongest_baseline_metric", "test_acc")
        lines += format_baselines(table.attrs["baselines"], row[f"{metric}_mean"], row[f"{metric}_std"], int(row["seeds"]), metric)
    elif len(table) and "baseline_test_acc" in table:
        row = table.iloc[0]
        lines.append(
            f"baseline ({row['baseline']}, same split): test accuracy {row['baseline_test_acc']:.4f}, "
            f"balanced {row['baseline_test_balanced_acc']:.4f} | winner {row['test_acc_mean']:.4f} "
            f"({row['test_acc_mean'] - row['baseline_test_acc']:+.4f})"
        )
    return "\n".join(lines)

"""Classic baselines on the retrain's split, so that every report says whether the search beat them.

Fitted on the train + validation images and tested once on the test split, the same images the
winner is retrained and tested on (``fit_baselines``):

- ``logreg_pixels``: logistic regression on the pixels (standardised, C = 1), untuned on purpose:
  the reference a hand-written script gives in a minute;
- ``svc_rbf_pixels``: an RBF support-vector machine on the pixels (scaled to [0, 1]), its C and
  gamma chosen by stratified 3-fold cross-validation on the (capped) train + validation images
  over ``SVC_GRID`` (6 settings); gamma is a factor times scikit-learn's ``"scale"``,
  1 / (features x pixel variance);
- ``linear_probe`` (only when the winner starts from a pretrained backbone): logistic regression on
  the frozen features of that backbone (``trainables.features``: pooled pre-logits, cached on disk).

The pixels are area-averaged to at most ``PIXEL_SIDE`` px a side (3 x 16 x 16 = 768 features),
so a baseline's design matrix does not grow with the stored image size. Each baseline is capped in
size, which caps its time: beyond ``MAX_TRAIN[key]`` training images it is fitted on a stratified
subsample (seeded), and its row says so (``train_examples`` of ``of_train_examples``). Images are
read in batches (64 at a time for the pixels; a streamed run's cache is never copied whole): the memory
of a baseline is its design matrix, ``matrix_mib`` (float32), plus one batch of pixels, plus for
the SVC scikit-learn's kernel cache (``SVC_CACHE_MB``).

``strongest`` picks the baseline the headline compares the winner with: the best on the run's test
metric (test accuracy, or balanced accuracy when the run ranks by ``val_balanced_acc``). Written to
``RUN_DIR/retrain/baselines.json`` (and ``baselines.csv``) and reused by a later ``retrain``
unless ``force``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from analysis.batches import image_batches
from analysis.evaluate import classification_metrics
from analysis.records import read_json, write_json, write_text
from trainables.cache import ImageView
from trainables.metrics import log_loss
from trainables.models import uses_pretrained_backbone

__all__ = [
    "BASELINE_FILE",
    "MAX_TRAIN",
    "PIXEL_SIDE",
    "SVC_GRID",
    "fit_baselines",
    "format_baselines",
    "pixel_matrix",
    "stratified_subsample",
    "strongest",
]

BASELINE_FILE = "baselines.json"
PIXEL_SIDE = 16  # px: pixels are area-averaged to at most this side before a pixel baseline sees them
# Training images each baseline is fitted on at most (a stratified, seeded subsample beyond): the
# size cap that caps its time (each row records its fitting time, fit_s).
MAX_TRAIN = {"logreg_pixels": 5_000, "svc_rbf_pixels": 3_000, "linear_probe": 5_000}
# The SVC's grid, searched by CV_FOLDS-fold stratified cross-validation: C, and gamma as a factor
# of scikit-learn's "scale" (1 / (features x variance)).
SVC_GRID = {"C": (1.0, 10.0, 100.0), "gamma_factor": (0.5, 1.0)}
CV_FOLDS = 3
SVC_CACHE_MB = 200  # scikit-learn's kernel cache for the SVC (its default)
NAMES = {"logreg_pixels": "logistic regression on pixels", "svc_rbf_pixels": "svc-rbf on pixels"}


def stratified_subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``limit`` of ``labels``, every class kept in proportion (at least
    one image of each present class), drawn with ``seed``; all positions when there are few enough."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = np.maximum(1, np.floor(counts * limit / len(labels)).astype(int))
    # Hand out what flooring left over, largest remainders first, within each class's size.
    for k in np.argsort(-(counts * limit / len(labels) - share), kind="stable"):
        if share.sum() >= limit:
            break
        share[k] += share[k] < counts[k]
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(n), replace=False) for c, n in zip(classes, share)]
    return np.sort(np.concatenate(picked))


def pixel_matrix(images, side: int = PIXEL_SIDE, batch: int = 64) -> np.ndarray:
    """(N, 3 x s x s) float32 pixels in [0, 1] of (N, 3, S, S) uint8 ``images`` (an array or a
    cache view, read ``batch`` at a time), area-averaged to s = min(S, ``side``) px a side."""
    import torch  # imports torch: only when a pixel baseline is fitted
    import torch.nn.functional as F

    stored = images.shape[-1]
    s = min(stored, side)
    out = np.empty((len(images), 3 * s * s), dtype=np.float32)
    at = 0
    for pixels in image_batches(images, batch):
        x = torch.as_tensor(pixels).float() / 255.0
        if s != stored:
            x = F.adaptive_avg_pool2d(x, s)
        out[at : at + len(x)] = x.reshape(len(x), -1).numpy()
        at += len(x)
    return out


def strongest(baselines: list[dict], metric: str = "test_acc") -> dict:
    """The baseline with the highest ``metric`` (the first of equals, in fitting order)."""
    return max(baselines, key=lambda b: (b[metric], -baselines.index(b)))


def fit_baselines(
    root: Path, data, winner_config: dict[str, Any], threads: int = 1, force: bool = False, seed: int = 0,
    out: Callable[[str], None] = print,
) -> list[dict]:  # fmt: skip
    """Fit and test every baseline for the winner ``winner_config``; their rows (stored in ``root``)."""
    pretrained = uses_pretrained_backbone(winner_config)
    keys = ["logreg_pixels", "svc_rbf_pixels"] + (["linear_probe"] if pretrained else [])
    key = {
        "baselines": keys, "train_examples": len(data.train_labels), "test_examples": len(data.test_labels), "seed": seed,
        "max_train": {k: MAX_TRAIN[k] for k in keys}, "pixel_side": PIXEL_SIDE, "svc_grid": SVC_GRID,
        "probe": f"{winner_config.get('model')}:{winner_config.get('weights')}" if pretrained else None,
    }  # fmt: skip
    key = json.loads(json.dumps(key))  # as stored: tuples become lists
    path = Path(root) / BASELINE_FILE
    if path.is_file() and not force:
        stored = read_json(path)
        if stored.get("key") == key:
            return stored["rows"]
    rows = []
    for name in keys:
        began = time.perf_counter()
        fit = {"logreg_pixels": _logreg_pixels, "svc_rbf_pixels": _svc_rbf_pixels, "linear_probe": _linear_probe}[name]
        row = fit(data, winner_config, threads, seed)
        row["fit_s"] = round(time.perf_counter() - began, 2)
        out(f"baseline: {format_baseline(row)}")
        rows.append(row)
    write_json(path, {"key": key, "rows": rows})
    write_text(Path(root) / "baselines.csv", pd.DataFrame(rows).to_csv(index=False))
    return rows


def format_baseline(row: dict) -> str:
    """One baseline as one line: name, test scores, and what it was fitted on and how."""
    capped = (
        f"a stratified subsample of {row['train_examples']} of {row['of_train_examples']} images (seed {row['seed']})"
        if row["train_examples"] < row["of_train_examples"]
        else f"all {row['train_examples']} images"
    )
    return (
        f"{row['name']}: test accuracy {row['test_acc']:.4f}, balanced {row['test_balanced_acc']:.4f} | fitted on {capped}, "
        f"{row['features']} features, matrix {row['matrix_mib']:.0f} MiB, {row['fit_s']:.1f} s"
        + (f" | {row['tuned']}" if row.get("tuned") else "")
    )


def format_baselines(rows: list[dict], winner_mean: float, winner_std: float, seeds: int, metric: str = "test_acc") -> list[str]:
    """The baselines, one line each, then the headline: the winner against the strongest."""
    best = strongest(rows, metric)
    what = "test accuracy" if metric == "test_acc" else "test balanced accuracy"
    winner = f"winner {winner_mean:.4f} ± {winner_std:.4f} (mean ± std over {seeds} seed(s))"
    if winner_mean > best[metric]:
        headline = (
            f"the search beat the strongest baseline ({best['name']}, {best[metric]:.4f}) on {what}: "
            f"{winner}, {winner_mean - best[metric]:+.4f}"
        )
    else:
        headline = f"the search did not beat the strongest baseline ({best['name']}, {best[metric]:.4f}) on {what}: {winner}"
    return [*(f"baseline {format_baseline(row)}" for row in rows), headline]


def _pixels_of(data, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The capped training pixels and labels, and how many training images there were."""
    labels = np.asarray(data.train_labels)
    picked = stratified_subsample(labels, limit, seed)
    return pixel_matrix(_subset(data.train_images, picked)), labels[picked], len(labels)


def _subset(images, positions: np.ndarray):
    """``images`` at ``positions``: a narrower view of the cache for a view (nothing read yet)."""
    if len(positions) == len(images):
        return images
    if isinstance(images, ImageView):
        return ImageView(images.base, images.index[positions])
    return np.asarray(images)[positions] if isinstance(images, np.ndarray) else images[positions]


def _row(name: str, data, predictions: np.ndarray, probabilities: np.ndarray | None, used: int, total: int,
         features: int, seed: int, tuned: str = "") -> dict:  # fmt: skip
    summary, _ = classification_metrics(data.test_labels, predictions, data.classes)
    return {
        "baseline": name, "name": NAMES.get(name, name), "test_acc": summary["test_acc"],
        "test_balanced_acc": summary["test_balanced_acc"],
        "test_loss": log_loss(probabilities, data.test_labels) if probabilities is not None else math.nan,
        "train_examples": used, "of_train_examples": total, "test_examples": len(data.test_labels), "seed": seed,
        "features": features, "matrix_mib": round(used * features * 4 / 2**20, 1), "tuned": tuned,
    }  # fmt: skip


def _full_probabilities(estimator, x: np.ndarray, classes: int) -> np.ndarray:
    # Columns for every class, in class order, even if one were missing from the training labels.
    full = np.zeros((len(x), classes))
    full[:, estimator.classes_] = estimator.predict_proba(x)
    return full


def _logreg_pixels(data, winner_config, threads: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, total = _pixels_of(data, MAX_TRAIN["logreg_pixels"], seed)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    with _thread_limit(threads):
        estimator.fit(x, y)
        probabilities = np.concatenate(
            [_full_probabilities(estimator, pixel_matrix(b), len(data.classes)) for b in image_batches(data.test_images)]
        ) if len(data.test_labels) else np.zeros((0, len(data.classes)))  # fmt: skip
    return _row("logreg_pixels", data, probabilities.argmax(1), probabilities, len(y), total, x.shape[1], seed, "untuned: C = 1")


def _svc_rbf_pixels(data, winner_config, threads: int, seed: int) -> dict:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    x, y, total = _pixels_of(data, MAX_TRAIN["svc_rbf_pixels"], seed)
    scale = 1.0 / (x.shape[1] * float(x.var()) or 1.0)  # scikit-learn's gamma="scale"
    grid = {"C": list(SVC_GRID["C"]), "gamma": [f * scale for f in SVC_GRID["gamma_factor"]]}
    counts = np.unique(y, return_counts=True)[1]
    folds = min(CV_FOLDS, int(counts.min()) if len(counts) else 0)  # stratified: at most the smallest class
    with _thread_limit(threads):
        if folds >= 2:
            search = GridSearchCV(SVC(kernel="rbf", cache_size=SVC_CACHE_MB), grid,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1)  # fmt: skip
            search.fit(x, y)
            estimator, chosen = search.best_estimator_, search.best_params_
            tuned = (f"C {chosen['C']:g}, gamma {chosen['gamma']:.3g} ({chosen['gamma'] / scale:g} x scale), chosen by "
                     f"{folds}-fold CV over {len(grid['C']) * len(grid['gamma'])} settings (CV accuracy {search.best_score_:.4f})")  # fmt: skip
        else:  # a class with one training image: no stratified fold; scikit-learn's defaults
            estimator = SVC(kernel="rbf", C=1.0, gamma=scale, cache_size=SVC_CACHE_MB).fit(x, y)
            tuned = "C 1, gamma scale (untuned: a class has a single training image, no stratified CV)"
        predictions = (
            np.concatenate([estimator.predict(pixel_matrix(b)) for b in image_batches(data.test_images)])
            if len(data.test_labels) else np.zeros(0, dtype=np.int64)
        )  # fmt: skip
    return _row("svc_rbf_pixels", data, predictions, None, len(y), total, x.shape[1], seed, tuned)


def _linear_probe(data, winner_config, threads: int, seed: int) -> dict:
    from trainables.features import fit_feature_classifier  # imports torch and timm: only for a probe

    labels = np.asarray(data.train_labels)
    picked = stratified_subsample(labels, MAX_TRAIN["linear_probe"], seed)
    config = {"model": winner_config["model"], "weights": winner_config["weights"], "classifier": "logistic_regression",
              "C": 1.0, "standardize": True, "threads": threads}  # fmt: skip
    model = fit_feature_classifier(config, _subset(data.train_images, picked), labels[picked], data.classes)
    probabilities = model.probabilities(data.test_images)  # features extracted in batches
    row = _row("linear_probe", data, probabilities.argmax(1), probabilities, len(picked), len(labels), model.feature_dim, seed,
               "untuned: C = 1, standardised features")  # fmt: skip
    return row | {"name": f"logistic regression on frozen {winner_config['model']} features"}


def _thread_limit(threads: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)

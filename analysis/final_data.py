"""The retrain's data: the run's train + validation images for the final models, and the test split
they are evaluated on once. The only reader of the test split (trials get
``analysis.rerun.load_trial_data``, which has none; ``predict`` gets ``load_train_data``).

A streamed run's images stay in the data cache: views of its memory-mapped shards
(``trainables.cache.ImageView``, ``FinalData.loading`` "stream"), read in batches by the refit and
by every evaluation. The cache must be intact unless ``rebuild_cache``
(``trainables.cache.CacheDamaged`` names the shard and the command that decodes it again)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.rerun import load_run_images
from trainables.cache import CachedImages, ImageView

__all__ = ["FinalData", "load_final_data", "load_train_data"]


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
    """The run's data set, split as recorded in ``split.json``: train + validation, and test."""
    return _load_final_data(run_dir, with_test=True, rebuild_cache=rebuild_cache)


def load_train_data(run_dir: Path, rebuild_cache: bool = False, command: str = "predict") -> FinalData:
    """The run's train + validation images only (no test split): what a refitted model needs."""
    return _load_final_data(run_dir, with_test=False, rebuild_cache=rebuild_cache, command=command)


def _load_final_data(run_dir: Path, with_test: bool, rebuild_cache: bool = False, command: str = "retrain") -> FinalData:
    # Refuses files changed since the split, and a cache gone or damaged since the search.
    images, split, loading = load_run_images(run_dir, rebuild_cache=rebuild_cache, command=command)
    train = np.union1d(np.asarray(split["train"], dtype=np.int64), np.asarray(split["val"], dtype=np.int64))
    test = np.asarray(split["test"] if with_test else [], dtype=np.int64)
    overlap = np.intersect1d(train, test)
    if len(overlap):
        raise ValueError(f"{Path(run_dir) / 'split.json'}: {len(overlap)} test indices are also train/val, e.g. {overlap[:5].tolist()}")
    streamed = loading == "stream" and isinstance(images.images, CachedImages)

    def pick(index: np.ndarray):
        return ImageView(images.images, index) if streamed else images.images[index]

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


"""The retrain's data: the run's train + validation images for the final models, and the test split
they are evaluated on once. The only reader of the test split (trials get
``analysis.rerun.load_trial_data``, which has none; ``predict`` gets ``load_train_data``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.rerun import load_run_images

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


def load_final_data(run_dir: Path) -> FinalData:
    """The run's data set, split as recorded in ``split.json``: train + validation, and test."""
    return _load_final_data(run_dir, with_test=True)


def load_train_data(run_dir: Path) -> FinalData:
    """The run's train + validation images only (no test split): what a refitted model needs."""
    return _load_final_data(run_dir, with_test=False)


def _load_final_data(run_dir: Path, with_test: bool) -> FinalData:
    images, split, _ = load_run_images(run_dir)  # refuses files changed since the split
    train = np.union1d(np.asarray(split["train"], dtype=np.int64), np.asarray(split["val"], dtype=np.int64))
    test = np.asarray(split["test"] if with_test else [], dtype=np.int64)
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


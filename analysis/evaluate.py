"""The one evaluation of a retrained model on the test split: accuracy, loss, balanced accuracy and
macro F1 of its class probabilities (trainables/metrics.py), the confusion matrix, per-class
numbers, flip test-time augmentation, and the mean and spread over seeds."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from analysis.batches import mirrored
from trainables import metrics

__all__ = ["classification_metrics", "confusion_table", "mean_std", "mirrored", "probability_metrics", "tta_probabilities"]


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, classes: tuple[str, ...]
) -> tuple[dict[str, float], pd.DataFrame]:
    """Accuracy, balanced accuracy and macro F1, and per-class precision, recall, F1 and support.

    scikit-learn's metrics: a class never predicted has precision 0, a class absent from the
    labels recall 0 (``zero_division=0``); balanced accuracy and macro F1 average over the classes
    present in ``labels``.
    """
    summary = {
        "test_acc": metrics.accuracy(labels, predictions),
        "test_balanced_acc": metrics.balanced_accuracy(labels, predictions),
        "test_macro_f1": metrics.macro_f1(labels, predictions),
    }
    return summary, metrics.per_class(labels, predictions, classes)


def probability_metrics(probabilities: np.ndarray, labels: np.ndarray, classes) -> tuple[dict, np.ndarray, pd.DataFrame]:
    """Accuracy, loss, balanced accuracy and macro F1 of class probabilities; confusion; per class."""
    test_loss = metrics.log_loss(probabilities, labels)
    predictions = probabilities.argmax(1)
    confusion = metrics.confusion_matrix(labels, predictions, len(classes))
    summary, per_class = classification_metrics(labels, predictions, classes)
    return summary | {"test_loss": test_loss}, confusion, per_class



def confusion_table(confusion: np.ndarray, classes) -> pd.DataFrame:
    """The confusion matrix with class names: rows true class, columns predicted."""
    return pd.DataFrame(confusion, index=pd.Index(list(classes), name="true"), columns=list(classes))


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of a single value is 0."""
    values = np.asarray(list(values), dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0



def tta_probabilities(
    probabilities: Callable[[np.ndarray], np.ndarray], images: np.ndarray, plain: np.ndarray | None = None
) -> np.ndarray:
    """Flip TTA: the mean of the class probabilities of each image and of its mirror image.

    ``plain``: ``probabilities(images)`` when the caller has it already (not computed twice)."""
    plain = probabilities(images) if plain is None else plain
    return (plain + probabilities(mirrored(images))) / 2.0


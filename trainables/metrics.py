"""Classification metrics, each defined once (scikit-learn's): every trainable's validation numbers
and the retrain's test numbers come from here, so a leaderboard compares like with like."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from sklearn.metrics import log_loss as sklearn_log_loss

__all__ = ["accuracy", "balanced_accuracy", "confusion_matrix", "log_loss", "macro_f1", "per_class"]


def _classes(values) -> np.ndarray:
    """Class indices as int64 numpy, from an array or a (possibly CUDA) tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(np.int64)


def accuracy(labels, predictions) -> float:
    """Share of correct predictions; 0 for no labels."""
    labels, predictions = _classes(labels), _classes(predictions)
    return float(accuracy_score(labels, predictions)) if len(labels) else 0.0


def balanced_accuracy(labels, predictions) -> float:
    """Mean recall over the classes present in ``labels`` (scikit-learn's ``balanced_accuracy_score``);
    0 for no labels. A predicted class absent from ``labels`` lowers the recall of the true class only."""
    labels, predictions = _classes(labels), _classes(predictions)
    if len(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(labels, predictions))


def macro_f1(labels, predictions) -> float:
    """F1 averaged over the classes present in ``labels`` (a class never predicted scores 0)."""
    labels, predictions = _classes(labels), _classes(predictions)
    present = np.unique(labels)
    if not len(present):
        return 0.0
    return float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of class probabilities (scikit-learn's ``log_loss`` over every column's
    class): features trials' val_loss and the retrain's test loss."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    # Softmax rows sum to 1 within float32 rounding; scikit-learn wants them normalised exactly.
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    loss = sklearn_log_loss(np.asarray(labels), probabilities, labels=np.arange(probabilities.shape[1]))
    return float(loss) + 0.0  # + 0.0: no "-0.0" in a CSV


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts, rows true class, columns predicted class (scikit-learn's, over every class)."""
    return sklearn_confusion_matrix(_classes(labels), _classes(predictions), labels=np.arange(num_classes))


def per_class(labels, predictions, classes: tuple[str, ...]) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class: a class never predicted has precision 0,
    a class absent from the labels recall 0 (``zero_division=0``)."""
    labels, predictions = _classes(labels), _classes(predictions)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=np.arange(len(classes)), zero_division=0
    )
    return pd.DataFrame(
        {"class": list(classes), "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    )

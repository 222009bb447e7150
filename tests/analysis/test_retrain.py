import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

from analysis.retrain import classification_metrics, confusion_matrix, mean_std


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    confusion = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_metrics_match_scikit_learn_including_a_class_never_predicted():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 3, 200))  # class 3 rarely right
    predictions[predictions == 3] = 2  # and never predicted
    summary, per_class = classification_metrics(confusion_matrix(labels, predictions, 4), ("a", "b", "c", "d"))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=range(4), zero_division=0)
    assert per_class["precision"].tolist() == pytest.approx(precision.tolist())
    assert per_class["recall"].tolist() == pytest.approx(recall.tolist())
    assert per_class["f1"].tolist() == pytest.approx(f1.tolist())
    assert per_class["support"].tolist() == support.tolist() and per_class["class"].tolist() == ["a", "b", "c", "d"]
    assert summary["test_acc"] == pytest.approx((labels == predictions).mean())
    assert summary["test_balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, predictions))
    assert summary["test_macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro", zero_division=0))


def test_balanced_accuracy_ignores_a_class_absent_from_the_test_labels():
    summary, per_class = classification_metrics(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]), ("a", "b", "c"))
    assert summary["test_balanced_acc"] == pytest.approx((0.75 + 1.0) / 2)
    assert per_class["recall"].iloc[2] == 0.0 and per_class["support"].iloc[2] == 0


def test_mean_and_sample_std_over_seeds():
    assert mean_std([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert mean_std([0.9]) == (0.9, 0.0)  # one seed: no spread to report
    mean, std = mean_std([])
    assert math.isnan(mean) and math.isnan(std)

"""The metrics every trainable and the retrain share: scikit-learn's definitions, on arrays and tensors."""

import numpy as np
import pytest
import torch

from trainables import metrics


def test_balanced_accuracy_is_the_mean_recall_of_the_present_classes_for_arrays_and_tensors():
    labels, predictions = [0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 3, 3]  # class 3 is never a label
    assert metrics.balanced_accuracy(labels, predictions) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert metrics.balanced_accuracy(torch.tensor(labels), torch.tensor(predictions)) == pytest.approx(0.5)
    assert metrics.balanced_accuracy([], []) == 0.0 and metrics.accuracy([], []) == 0.0
    assert metrics.accuracy(labels, predictions) == pytest.approx(3 / 6)


def test_log_loss_of_certain_right_answers_is_about_zero_and_never_negative():
    probabilities = np.eye(3)[[0, 1, 2]]
    loss = metrics.log_loss(probabilities, np.array([0, 1, 2]))
    assert loss == pytest.approx(0.0, abs=1e-12) and not str(loss).startswith("-")
    assert metrics.log_loss(np.full((2, 4), 0.25), np.array([0, 3])) == pytest.approx(np.log(4))


def test_confusion_matrix_and_per_class_cover_every_class():
    confusion = metrics.confusion_matrix([0, 1, 1], [0, 0, 1], num_classes=3)
    assert confusion.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    table = metrics.per_class([0, 1, 1], [0, 0, 1], ("a", "b", "c"))
    assert table["support"].tolist() == [1, 2, 0] and table["recall"].tolist() == [1.0, 0.5, 0.0]
    assert metrics.macro_f1([0, 1, 1], [0, 0, 1]) == pytest.approx((2 / 3 + 2 / 3) / 2)

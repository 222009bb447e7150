import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

from analysis.evaluate import classification_metrics, mean_std
from trainables.metrics import confusion_matrix


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    confusion = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_metrics_match_scikit_learn_including_a_class_never_predicted():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 3, 200))  # class 3 rarely right
    predictions[predictions == 3] = 2  # and never predicted
    summary, per_class = classification_metrics(labels, predictions, ("a", "b", "c", "d"))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=range(4), zero_division=0)
    assert per_class["precision"].tolist() == pytest.approx(precision.tolist())
    assert per_class["recall"].tolist() == pytest.approx(recall.tolist())
    assert per_class["f1"].tolist() == pytest.approx(f1.tolist())
    assert per_class["support"].tolist() == support.tolist() and per_class["class"].tolist() == ["a", "b", "c", "d"]
    assert summary["test_acc"] == pytest.approx((labels == predictions).mean())
    assert summary["test_balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, predictions))
    assert summary["test_macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro", zero_division=0))


def test_balanced_accuracy_ignores_a_class_absent_from_the_test_labels():
    # Confusion [[3, 1, 0], [0, 4, 0], [0, 0, 0]]: class c is absent from the labels.
    labels, predictions = np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 0, 1, 1, 1, 1, 1])
    summary, per_class = classification_metrics(labels, predictions, ("a", "b", "c"))
    assert summary["test_balanced_acc"] == pytest.approx((0.75 + 1.0) / 2)
    assert per_class["recall"].iloc[2] == 0.0 and per_class["support"].iloc[2] == 0


def test_scikit_learn_metrics_agree_with_the_definitions_on_a_known_case():
    """Balanced accuracy is the mean recall over present classes; log loss the mean of -log p(true class)."""
    from trainables.features import log_loss

    labels = np.array([0, 0, 0, 0, 1, 1, 3])
    predictions = np.array([0, 0, 0, 0, 0, 1, 0])
    summary, _ = classification_metrics(labels, predictions, ("a", "b", "c", "d"))
    assert summary["test_balanced_acc"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert summary["test_acc"] == pytest.approx(5 / 7)
    probabilities = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    expected = -(np.log(0.5) + np.log(0.8) + np.log(0.2)) / 3
    assert log_loss(probabilities, np.array([0, 1, 0])) == pytest.approx(expected, rel=1e-6)
    # Only two of the three classes among the labels: the third column is still a class.
    assert log_loss(probabilities[:2], np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2, rel=1e-6)


def test_mean_and_sample_std_over_seeds():
    assert mean_std([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert mean_std([0.9]) == (0.9, 0.0)  # one seed: no spread to report
    mean, std = mean_std([])
    assert math.isnan(mean) and math.isnan(std)


def _scratch_classifier(seed: int = 0):
    import torch

    from trainables.classifier import build_classifier

    torch.manual_seed(seed)
    config = {"model": "scratch_resnet", "conv_blocks": 1, "base_width": 4, "seed": seed}
    return build_classifier(config, tuple("abc"))


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror():
    from analysis.evaluate import mirrored, tta_probabilities

    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    assert (mirrored(images)[..., 0] == images[..., -1]).all()
    model = _scratch_classifier()
    plain, flipped = model.probabilities(images), model.probabilities(images[..., ::-1].copy())
    assert not np.allclose(plain, flipped)  # a random net is not flip-invariant: the test can fail
    np.testing.assert_allclose(tta_probabilities(model.probabilities, images), (plain + flipped) / 2, atol=1e-6)
    # Left-right symmetric images: TTA changes nothing.
    symmetric = np.concatenate([images[..., :4], images[..., :4][..., ::-1]], axis=-1)
    np.testing.assert_allclose(tta_probabilities(model.probabilities, symmetric), model.probabilities(symmetric), atol=1e-6)


def _stored_model(directory, probabilities, tta=None):
    directory.mkdir(parents=True)
    np.save(directory / "test_probabilities.npy", probabilities, allow_pickle=False)
    np.save(directory / "test_probabilities_tta.npy", probabilities if tta is None else tta, allow_pickle=False)
    return directory


def test_an_ensemble_of_identical_models_equals_the_single_model(tmp_path):
    from analysis.ensemble import ensemble_table
    from analysis.evaluate import probability_metrics

    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(4), size=40)
    labels = rng.integers(0, 4, 40)
    members = [[_stored_model(tmp_path / f"t{i}-seed0", probabilities)] for i in range(3)]
    table = ensemble_table(members, labels, tta=True)
    assert table["model"].tolist() == ["single best", "ensemble of top 3 (first seed each)"]
    single, _, _ = probability_metrics(probabilities, labels, tuple("abcd"))
    for column in ("test_acc", "test_balanced_acc", "test_loss", "test_acc_tta"):
        assert table[column].tolist() == pytest.approx([single[column.removesuffix("_tta")]] * 2)
    assert table["members"].iloc[1] == "t0-seed0 + t1-seed0 + t2-seed0"


def test_an_ensemble_averages_probabilities_and_lists_seed_rows(tmp_path):
    from analysis.ensemble import ensemble_table

    labels = np.array([0, 1])
    # Each model alone gets one of two images right; their average gets both.
    first = _stored_model(tmp_path / "a-seed0", np.array([[0.9, 0.1], [0.6, 0.4]]))
    second = _stored_model(tmp_path / "b-seed0", np.array([[0.4, 0.6], [0.1, 0.9]]))
    seed = _stored_model(tmp_path / "a-seed1", np.array([[0.9, 0.1], [0.6, 0.4]]))
    table = ensemble_table([[first, seed], [second]], labels).set_index("model")
    assert table.loc["single best", "test_acc"] == 0.5
    assert table.loc["ensemble of top 2 (first seed each)", "test_acc"] == 1.0
    assert table.loc["ensemble of top 2 (first seed each)", "test_loss"] == pytest.approx(-np.log([0.65, 0.65]).mean())
    assert table.loc["best trial, 2 seeds averaged", "n_models"] == 2
    assert table.loc["ensemble of top 2 x all seeds (3 models)", "n_models"] == 3


def test_ensemble_needs_two_trials(tmp_path):
    from analysis.retrain import retrain

    (tmp_path / "settings.json").write_text("{}")
    with pytest.raises(ValueError, match=r"`top_k` must be >= 2, but it is 1"):
        retrain(tmp_path, top_k=1, ensemble=True)

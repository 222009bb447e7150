import numpy as np
import pytest
import torch

from trainables.classifier import TrialConfig, train_classifier

SMALL = {"model": "scratch_resnet", "conv_blocks": 2, "base_width": 16, "batch_size": 32, "lr": 3e-3, "max_epochs": 3}


class MemoryCheckpoints:
    """The Checkpoints protocol kept in a list, as a test double for Ray's checkpoint store."""

    def __init__(self, resume_from: dict | None = None):
        self.saved: list[dict] = []
        self.resume_from = resume_from

    def load(self):
        return self.resume_from

    def save(self, state):
        import copy

        self.saved.append(copy.deepcopy(state))


def test_reports_once_per_epoch_with_every_metric(small_trial_data):
    reports = []
    train_classifier(SMALL, small_trial_data, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc", "lr", "epoch_time_s", "train_time_s"):
        assert all(key in r for r in reports)
    assert reports[-1]["val_acc"] > 0.6  # it learns: chance is 0.1


def test_same_config_same_metrics(small_trial_data):
    first, second = [], []
    train_classifier(SMALL | {"max_epochs": 2}, small_trial_data, first.append)
    train_classifier(SMALL | {"max_epochs": 2}, small_trial_data, second.append)
    assert [(r["val_loss"], r["val_acc"]) for r in first] == [(r["val_loss"], r["val_acc"]) for r in second]


def test_resuming_from_a_checkpoint_continues_the_same_run(small_trial_data):
    config = SMALL | {"dropout": 0.3, "lr_schedule": "cosine"}
    straight, store = [], MemoryCheckpoints()
    train_classifier(config, small_trial_data, straight.append, store)
    assert [s["epoch"] for s in store.saved] == [1, 2, 3]
    resumed = []
    train_classifier(config, small_trial_data, resumed.append, MemoryCheckpoints(resume_from=store.saved[0]))
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(straight[1:], resumed):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == b["lr"]


def test_offline_imagenet_features_beat_random_ones_head_only():
    # Transfer learning is real offline: with the backbone frozen, one epoch of the head on
    # pretrained features already separates digits; on random features it barely starts.
    from trainables.data import load_dataset, split_indices, trial_data

    images = load_dataset("digits", 32)
    data = trial_data(images, split_indices(images.labels, 0.2, 0.2, seed=0, data_fraction=0.35))
    config = {"model": "tf_efficientnet_lite0", "frozen_fraction": 1.0, "max_epochs": 1, "lr": 1e-2, "batch_size": 32, "threads": 2}
    accuracy = {}
    for weights in ("offline", "none"):
        reports = []
        train_classifier(config | {"weights": weights}, data, reports.append)
        accuracy[weights] = reports[-1]["val_acc"]
    assert accuracy["offline"] > 0.5 and accuracy["offline"] > accuracy["none"] + 0.2, accuracy


@pytest.mark.parametrize(
    "values, message",
    [
        ({"optimizer": "adma"}, r"`optimizer` is 'adma'.*did you mean 'adam'"),
        ({"learning_rate": 0.1}, r"unknown trial parameter 'learning_rate'"),
        ({"lr": -1.0}, r"`lr` is -1.0, but must be a finite number > 0"),
        ({"frozen_fraction": 1.5}, r"frozen_fraction"),
        ({"batch_size": "big"}, r"'batch_size' is 'big', but must be int"),
    ],
)
def test_bad_trial_config_says_what_and_why(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrialConfig.from_mapping(values)


def test_config_numbers_are_converted():
    config = TrialConfig.from_mapping({"lr": 1, "batch_size": 64.0, "nesterov": 1})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.batch_size == 64 and config.nesterov is True


def test_fit_classifier_replays_the_first_epochs_of_a_trial(small_trial_data):
    # Same seed, same schedule horizon, same data: stopping at epoch 2 gives the weights the trial
    # had after epoch 2, even though the trial went on to epoch 3 (retrain relies on this).
    from trainables.classifier import fit_classifier

    config = SMALL | {"lr_schedule": "cosine", "dropout": 0.2}
    store = MemoryCheckpoints()
    train_classifier(config, small_trial_data, [].append, store)
    epochs = []
    model = fit_classifier(
        config, small_trial_data.train_images, small_trial_data.train_labels, small_trial_data.classes, epochs=2, report=epochs.append
    )
    assert [e["epoch"] for e in epochs] == [1, 2]
    trial_weights = store.saved[1]["model"]
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, trial_weights[name]), name
    with pytest.raises(ValueError, match=r"`epochs` is 4, but must be 1 <= epochs <= max_epochs \(= 3\)"):
        fit_classifier(config, small_trial_data.train_images, small_trial_data.train_labels, small_trial_data.classes, epochs=4)


def test_a_saved_state_dict_rebuilds_the_same_classifier(small_trial_data):
    from trainables.classifier import build_classifier, fit_classifier

    data = small_trial_data
    model = fit_classifier(SMALL | {"max_epochs": 1}, data.train_images, data.train_labels, data.classes)
    again = build_classifier(SMALL | {"max_epochs": 1}, data.classes, state_dict=model.net.state_dict())
    probabilities = model.probabilities(data.val_images)
    assert probabilities.shape == (len(data.val_labels), 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.allclose(again.probabilities(data.val_images), probabilities, atol=1e-6)

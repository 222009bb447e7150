"""The training-side workflow spaces (issue 7), each run end to end with a tiny budget on the
shared Ray session: regularization, transfer, imbalanced, resolution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.records import read_json, read_trials
from search.config.sampling import dry_run
from search.config.spaces import load_space, resolve_settings
from search.engine import run_search
from tests.conftest import REPO, write_png_folder
from tests.fixed_spaces import lowest_train_loss, start_with

pytestmark = pytest.mark.slow


# Each search's first trial is a setting that learns (tests/fixed_spaces.py START); the sampler
# gives the second. Two epochs on a fifth of digits leave a from-scratch CNN's val_acc near chance
# (BatchNorm's running statistics have barely moved), but not its training loss: the lowest
# last-epoch train_loss of the two trials must fall below these, each the highest over seeds 1-5
# plus 0.1 (a uniform guess's loss is ln 10 = 2.30, ln 4 = 1.39 for the four imbalanced classes).
# The pretrained transfer backbone is the other way round: its best val_acc must beat the lowest
# over seeds 1-5 less 0.1 (three times chance), while its training loss stays near a guess's.
# benchmarks/test_bounds.py --cases regularization,transfer,imbalanced,resolution prints them.
TRAIN_LOSS = {"regularization.py": 1.20, "resolution.py": 2.10, "imbalanced.py": 1.15}  # highest 1.06, 1.99, 1.00
TRANSFER_VAL_ACC = 0.30  # lowest 0.43


def _search(tmp_path_factory, space_file, **overrides):
    space = load_space(REPO / "spaces" / space_file)
    storage = tmp_path_factory.mktemp("runs")
    settings = resolve_settings(space, {"storage": str(storage), "name": "run", "seed": 1, "trials": 2,
                                        "start_with": start_with(space_file)} | overrides)  # fmt: skip
    return run_search(space, settings, out=[].append)


def _board(run_dir):
    table = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(table) == 2
    assert table["status"].str.match(r"^(completed|stopped early at epoch \d+)$").all(), table["status"]
    return table


def test_regularization_searches_augmentation_schedules_and_epochs(ray_session, tmp_path_factory):
    run_dir = _search(tmp_path_factory, "regularization.py", data_fraction=0.2, scheduler="fifo")
    table = _board(run_dir)
    assert lowest_train_loss(run_dir) < TRAIN_LOSS["regularization.py"]
    searched = {"use_dropout", "hflip", "rotation_degrees", "crop_scale", "color_jitter", "optimizer", "lr_schedule", "max_epochs"}
    assert searched <= set(table.columns)
    for record in read_trials(run_dir):
        # a trial that trains its own (searched) max_epochs to the end is completed, not stopped
        assert len(record.metrics) == record.params["max_epochs"] <= 6
        assert record.status["status"] == "completed"
        assert all("val_balanced_acc" in m for m in record.metrics)


def test_regularization_epochs_above_the_run_maximum_fail_before_ray():
    space = load_space(REPO / "spaces" / "regularization.py")
    with pytest.raises(ValueError, match=r"`max_epochs` is \d, but must be <= the run's max_epochs \(= 2\)"):
        dry_run(space, resolve_settings(space, {"max_epochs": 2, "grace_period_epochs": 1}))


def test_transfer_runs_offline_with_two_phases(ray_session, tmp_path_factory):
    run_dir = _search(tmp_path_factory, "transfer.py", data_fraction=0.2, max_epochs=2, image_size=32)
    table = _board(run_dir)
    assert table["val_acc"].max() > TRANSFER_VAL_ACC
    assert {"model", "frozen_fraction", "head_epochs", "backbone_lr_mult", "lr"} <= set(table.columns)
    assert set(table["model"]) == {"tf_efficientnet_lite0"}  # offline: the one backbone with weights
    assert all(r.config["weights"] == "offline" for r in read_trials(run_dir))
    assert table["val_acc"].notna().all()
    for record in read_trials(run_dir):
        assert record.status["status"] == "completed" or record.status["status"].startswith("stopped")


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory):
    """Digits 0-3 at 16 px, 120/60/20/10 images: a long tail."""
    from trainables.data import load_dataset

    digits = load_dataset("digits", 16)
    keep = np.concatenate([np.flatnonzero(digits.labels == c)[:n] for c, n in enumerate((120, 60, 20, 10))])
    root = tmp_path_factory.mktemp("imbalanced")
    return write_png_folder(root, digits.images[keep], digits.labels[keep], [f"digit{c}" for c in range(10)])


def test_imbalanced_ranks_by_balanced_accuracy_and_searches_class_weights(ray_session, tmp_path_factory, imbalanced_folder):
    run_dir = _search(tmp_path_factory, "imbalanced.py", dataset=str(imbalanced_folder), max_epochs=2, grace_period_epochs=1)
    assert lowest_train_loss(run_dir) < TRAIN_LOSS["imbalanced.py"]
    assert read_json(run_dir / "settings.json")["metric"] == "val_balanced_acc"
    assert read_json(run_dir / "split.json")["classes"] == ["digit0", "digit1", "digit2", "digit3"]
    table = _board(run_dir)
    assert {"class_weights", "val_balanced_acc", "label_smoothing"} <= set(table.columns)
    assert table["val_balanced_acc"].notna().all() and table["val_balanced_acc"].is_monotonic_decreasing
    assert table["rank"].tolist() == [1, 2]


def test_resolution_trains_retrains_and_predicts_at_the_trial_size(ray_session, tmp_path_factory):
    from analysis.predict import predict
    from analysis.retrain import retrain
    from analysis.store import load_retrained, retrained_models

    run_dir = _search(tmp_path_factory, "resolution.py", data_fraction=0.2, max_epochs=2, grace_period_epochs=1)
    table = _board(run_dir)
    assert lowest_train_loss(run_dir) < TRAIN_LOSS["resolution.py"]
    assert {"image_size", "conv_blocks", "base_width"} <= set(table.columns)
    assert set(table["image_size"]) <= {16, 24, 32}
    retrain(run_dir, top_k=1, seeds=1, out=[].append)
    model = load_retrained(run_dir, retrained_models(run_dir)[0])
    assert model.config.image_size == int(table["image_size"].iloc[0])
    image = tmp_path_factory.mktemp("predict") / "one.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 255, dtype=np.uint8)).save(image)
    (ranked,) = predict(run_dir, [image], top=3)
    assert len(ranked) == 3 and sum(p for _, p in ranked) <= 1.0 + 1e-6

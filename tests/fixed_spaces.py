"""Space files of fixed trial configurations, and first points (``start_with``) for the shipped
space files, for end-to-end tests whose models must learn by a known margin:
``benchmarks/test_bounds.py`` trains the same configurations on the same splits at seeds 1-5 to
measure the bound each test asserts."""

from __future__ import annotations

import json
from pathlib import Path

# A from-scratch CNN that learns digits in an epoch or two.
LEARNS = {"conv_blocks": 2, "base_width": 16, "batch_size": 64, "optimizer": "adam", "lr": 3e-3}

# The first trial of each shipped space a test searches (``start_with``): a setting that learns,
# so the test can bound the best val_acc; the sampler gives the other trials.
START = {
    "scratch_cnn.py": LEARNS | {"batch_size": 32, "dropout": 0.0, "weight_decay": 1e-5},
    "resnet.py": {"batch_size": 32, "lr": 3e-3, "optimizer": "adam", "beta1": 0.9, "weight_decay": 1e-5,
                  "frozen_fraction": 0.5},
    "regularization.py": {"use_dropout": False, "hflip": False, "rotation_degrees": 0.0, "crop_scale": 1.0,
                          "color_jitter": 0.0, "optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-5,
                          "lr_schedule": "constant", "max_epochs": 2},
    "resolution.py": {"image_size": 16, "conv_blocks": 2, "base_width": 16, "lr": 3e-3, "batch_size": 32},
    "imbalanced.py": {"class_weights": True, "label_smoothing": 0.0, "lr": 3e-3, "base_width": 16, "conv_blocks": 2,
                      "batch_size": 32},
    "transfer.py": {"model": "tf_efficientnet_lite0", "frozen_fraction": 0.5, "head_epochs": 1, "backbone_lr_mult": 0.1,
                    "lr": 3e-3, "optimizer": "adam", "batch_size": 32},
}  # fmt: skip


def lowest_train_loss(run_dir) -> float:
    """The lowest last-epoch train_loss of a run's trials: what a test that bounds the training
    loss asserts (and benchmarks/test_bounds.py measures)."""
    from analysis.records import read_trials

    return float(min(record.metrics[-1]["train_loss"] for record in read_trials(run_dir) if record.metrics))


def start_with(space_file: str) -> str:
    """The ``start_with`` setting for shipped space ``space_file``."""
    return json.dumps([START[space_file]])


# Six from-scratch CNNs of a few sizes, all with that optimizer: trial k gets SIX[k].
SIX = [LEARNS | {"conv_blocks": b, "base_width": w} for b, w in [(2, 32), (3, 32), (2, 16), (3, 16), (1, 32), (1, 16)]]

# tests/test_interruptions.py: Ctrl-C, then resume and retrain.
# FIFO: every trial trains its 2 epochs, so the leaderboard's best is the best configuration's.
CTRL_C = {"configs": SIX, "settings": {"model": "scratch_resnet", "image_size": 16, "trials": 6, "max_epochs": 2,
          "scheduler": "fifo", "data_fraction": 0.5, "concurrency": 2, "seed": 4}}  # fmt: skip
# tests/test_interruptions.py: a two-worker trial killed with its driver (kill -9), then resumed.
TWO_WORKERS_KILLED = {"configs": [LEARNS], "settings": {"model": "scratch_resnet", "image_size": 16, "trials": 1,
                      "max_epochs": 6, "grace_period_epochs": 6, "data_fraction": 0.35, "workers_per_trial": 2, "seed": 3}}  # fmt: skip


def write_space(path: Path, configs: list[dict], settings: dict) -> Path:
    """A space file whose trial number k gets ``configs[k % len(configs)]``, with ``settings`` as its
    upper-case settings."""
    lines = [f"{key.upper()} = {value!r}" for key, value in settings.items()]
    # The repeat check compares searched parameters (none here): trial k is the k-th configuration.
    lines += ['REPEATS = "allow"']
    lines += [f"_CONFIGS = {configs!r}", "", "", "def space(trial):", "    return dict(_CONFIGS[trial.number % len(_CONFIGS)])"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_trivial_space(path: Path, function: str = "constant", low: float = 0.0, constants: dict | None = None, **settings) -> Path:
    """A space file of ``tests.trivial``'s ``function`` searching ``x`` in [low, 1], returning
    ``constants``, with ``settings`` (lower-case names) as its upper-case settings."""
    lines = [f'TRAINABLE = "tests.trivial:{function}"', *(f"{key.upper()} = {value!r}" for key, value in settings.items())]
    lines += ["", "", "def space(trial):", f'    trial.suggest_float("x", {low!r}, 1.0)', f"    return {constants or {}!r}"]
    path.write_text("\n".join(lines) + "\n")
    return path

"""Space files of fixed trial configurations, for end-to-end tests whose models must learn by a
known margin: ``benchmarks/test_bounds.py`` trains the same configurations on the same splits at
seeds 1-5 to measure the bound each test asserts."""

from __future__ import annotations

from pathlib import Path

# A from-scratch CNN that learns digits in an epoch or two.
LEARNS = {"conv_blocks": 2, "base_width": 16, "batch_size": 64, "optimizer": "adam", "lr": 3e-3}

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

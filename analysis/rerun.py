"""Re-run one trial from the run directory's files: its config, the settings and the split.

    from analysis.rerun import rerun_trial
    reports = rerun_trial("runs/resnet-20261125-120000", "a1b2c3d4")

The data set is loaded and split again from ``settings.json`` and ``split.json``; on the same
kind of device with the same thread count the metrics match the recorded ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.records import RunDir, read_json, trial_dir

__all__ = ["load_trial_data", "rerun_trial"]


def load_trial_data(run_dir: Path):
    """The run's train and validation images, rebuilt from its settings and recorded split."""
    from trainables.data import Split, load_dataset, trial_data

    run = RunDir(Path(run_dir))
    settings, split = run.settings(), run.split()
    images = load_dataset(settings.dataset, settings.image_size)
    if list(images.classes) != split["classes"]:
        raise ValueError(f"the data set's classes changed since the run: {images.classes} vs {split['classes']}")
    indices = Split(*(np.asarray(split[part], dtype=np.int64) for part in ("train", "val", "test")))
    return trial_data(images, indices)


def rerun_trial(run_dir: Path, trial_id: str, epochs: int | None = None) -> list[dict]:
    """Train trial ``trial_id`` again from its recorded config; return its per-epoch reports."""
    from trainables import get_trainable

    recorded = read_json(trial_dir(Path(run_dir), trial_id) / "config.json")
    config = dict(recorded["config"])
    if epochs is not None:
        config["max_epochs"] = epochs
    reports: list[dict] = []
    get_trainable(recorded["trainable"])(config, load_trial_data(run_dir), reports.append)
    return reports

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
from trainables import get_trainable
from trainables.cache import CacheDamaged
from trainables.data import load_dataset
from trainables.split import Split, check_unchanged, trial_data

__all__ = ["load_run_images", "load_trial_data", "rerun_trial"]


def load_run_images(run_dir: Path, rebuild_cache: bool = True, command: str = "retrain"):
    """The run's data set as it recorded it: (ImageSet, split.json's contents, data loading).

    Refuses (``trainables.split.DataChanged``, a ValueError) a file-based set whose files were
    added, removed or changed since the run split it. The images come from the data cache when it
    is still there (0 decoded), else are decoded again in this process; with ``rebuild_cache``
    False a missing or damaged cache is ``trainables.cache.CacheDamaged`` instead, naming the shard
    and ``python -m search COMMAND RUN_DIR --rebuild-cache``, which decodes it again.
    """
    run = RunDir(Path(run_dir))
    settings, split = run.settings().to_dict(), run.split()
    check_unchanged(split, settings, where=str(Path(run_dir) / "split.json"))
    loading = split.get("loading", "memory")
    try:
        images = load_dataset(
            settings["dataset"],
            settings["image_size"],
            data_root=settings.get("data_root") or None,
            classes=settings.get("classes", ""),
            cache=settings.get("data_cache") or None,
            cache_arrays=loading == "stream",
            out=lambda line: None,
            rebuild=rebuild_cache,
        )
    except CacheDamaged as error:
        raise CacheDamaged(
            f"{error}. The run's images were decoded into it for the search and are read from it, not "
            f"decoded again: `python -m search {command} {run_dir} --rebuild-cache` decodes it again from "
            f"{settings['dataset']!r} (files written by earlier retrains are kept)"
        ) from None
    if list(images.classes) != split["classes"]:
        raise ValueError(
            f"the classes of data set {settings['dataset']!r} changed since the run: now {list(images.classes)}, "
            f"recorded {split['classes']} in {Path(run_dir) / 'split.json'}"
        )
    return images, split, loading


def load_trial_data(run_dir: Path):
    """The run's train and validation images, rebuilt from its settings and recorded split."""

    images, split, loading = load_run_images(run_dir)
    indices = Split(*(np.asarray(split[part], dtype=np.int64) for part in ("train", "val", "test")))
    return trial_data(images, indices, loading=loading)


def rerun_trial(run_dir: Path, trial_id: str, epochs: int | None = None) -> list[dict]:
    """Train trial ``trial_id`` again from its recorded config; return its per-epoch reports."""

    recorded = read_json(trial_dir(Path(run_dir), trial_id) / "config.json")
    config = dict(recorded["config"])
    if epochs is not None:
        config["max_epochs"] = epochs
    reports: list[dict] = []
    get_trainable(recorded["trainable"])(config, load_trial_data(run_dir), reports.append)
    return reports

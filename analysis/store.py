"""The retrained models on disk (``RUN_DIR/retrain/<trial>-seed<n>/``): which are stored and still
match what is asked, where the best trial's are, and how each is loaded back through its
trainable's registry entry (``predict``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.final_data import load_train_data
from analysis.records import read_json
from trainables import DEFAULT_TRAINABLE, TRAINABLES, Trainable, get_entry

__all__ = ["TTA_METRICS", "load_retrained", "retrained_models", "stored_metrics"]

# The test metrics with flip TTA; NaN when the retrain ran without it.
TTA_METRICS = ("test_acc_tta", "test_loss_tta", "test_balanced_acc_tta")


def stored_metrics(directory: Path, trainable: Trainable, config: dict, epochs: int, tta: bool) -> dict | None:
    """A stored model's metrics.json when it was trained as asked now (same trainable, config but
    threads, epochs; evaluated with flip TTA if ``tta``), else None: it is to be retrained."""
    needed = ["model.json", "metrics.json", "test_probabilities.npy", *trainable.stored_files]
    needed += ["test_probabilities_tta.npy"] if tta else []
    if not all((directory / name).is_file() for name in needed):
        return None
    built = read_json(directory / "model.json")
    if built["epochs"] != epochs or built.get("trainable", DEFAULT_TRAINABLE) != trainable.name or {
        k: v for k, v in built["config"].items() if k != "threads"
    } != {k: v for k, v in config.items() if k != "threads"}:
        return None
    metrics = read_json(directory / "metrics.json")
    if not tta:  # evaluated with TTA before, not asked for now: leave it out of this summary
        metrics = {key: value for key, value in metrics.items() if key not in TTA_METRICS}
    return metrics



def retrained_models(run_dir: Path, trial_id: str | None = None) -> list[Path]:
    """Directories of the stored retrained models of ``trial_id`` (default: the best retrained trial)."""
    run_dir = Path(run_dir)
    results = run_dir / "test_results.csv"
    if not results.is_file():
        raise FileNotFoundError(
            f"run {str(run_dir)!r} has no retrained model ({results} is missing): "
            f"run `python -m search retrain {run_dir}` first"
        )
    if trial_id is None:
        trial_id = str(pd.read_csv(results, dtype={"trial_id": str})["trial_id"].iloc[0])
    models = pd.read_csv(run_dir / "retrain" / "models.csv", dtype={"trial_id": str})
    seeds = models.loc[models["trial_id"] == trial_id, "seed"].tolist()
    directories = [run_dir / "retrain" / f"{trial_id}-seed{seed}" for seed in seeds]
    missing = [d for d in directories if not _restorable(d)]
    if not directories or missing:
        raise FileNotFoundError(
            f"retrained models of trial {trial_id} are missing in {run_dir / 'retrain'}"
            f"{f' (e.g. {missing[0]})' if missing else ''}: run `python -m search retrain {run_dir} --force`"
        )
    return directories



def _restorable(directory: Path) -> bool:
    if not (directory / "model.json").is_file():
        return False
    entry = TRAINABLES.get(read_json(directory / "model.json").get("trainable", DEFAULT_TRAINABLE))
    return entry is not None and all((directory / name).is_file() for name in entry.stored_files)



def load_retrained(run_dir: Path, directory: Path, rebuild_cache: bool = False):
    """A retrained model, with ``probabilities(images)`` and ``classes``, whatever its trainable.

    Its trainable's ``load`` rebuilds it: a classifier from its weights; a features model is
    refitted on the run's train + validation images (never the test split), and the refit must
    reproduce the probabilities the retrain stored for the first training images, else ValueError
    says why it cannot be trusted. A streamed run's images are read from its data cache in batches;
    ``rebuild_cache`` decodes that cache again if it is gone or damaged (else
    ``trainables.cache.CacheDamaged`` names the shard).
    """
    built = read_json(Path(directory) / "model.json")
    load = get_entry(built.get("trainable", DEFAULT_TRAINABLE)).resolve("load")

    def train_data() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        data = load_train_data(run_dir, rebuild_cache=rebuild_cache, command="predict")
        return data.train_images, data.train_labels, data.classes

    return load(Path(directory), built, train_data)


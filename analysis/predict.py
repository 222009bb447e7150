"""Classify new images with the run's winner, preprocessed exactly as the run's images were.

    python -m search predict RUN_DIR photo.jpg other.png

The winner is the best retrained trial (``test_results.csv``); its probabilities are the mean of
the softmax outputs of its retrained seeds. A features winner (``trainables/features.py``) has no
stored estimator (scikit-learn saves only through pickle, which this project never loads): it is
refitted here on the run's train + validation images, deterministically, and checked against the
probabilities the retrain stored. Each image is read as ``trainables.images.load_image``
reads ImageFolder images: RGB, shorter side resized to the run's image size, centre crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.batches import batched_probabilities
from analysis.records import RunDir
from trainables.images import UNREADABLE_IMAGE_ERRORS, load_image
from trainables.split import check_unchanged

__all__ = ["predict"]


def predict(run_dir: Path, images: list[str | Path], top: int = 5, rebuild_cache: bool = False) -> list[list[tuple[str, float]]]:
    """For each image, the ``top`` most probable classes with their probabilities, best first.

    A features winner is refitted on the run's train + validation images, read from the data
    cache in batches for a streamed run; ``rebuild_cache`` decodes that cache again if it is gone
    or damaged (else ``trainables.cache.CacheDamaged`` names the shard). A classifier winner reads
    nothing but ``images``.

    Raises FileNotFoundError when the run has no retrained model or an image does not exist, and
    ValueError naming the file when an image cannot be read.
    """
    from analysis.store import load_retrained, retrained_models  # imports pandas: not at this module's import

    run_dir = Path(run_dir)
    run = RunDir.open(run_dir)
    if not images:
        raise ValueError("no image given: pass one or more image files")

    image_size = run.settings().image_size
    # The winner was chosen on the run's split: refuse when its files changed since (DataChanged).
    check_unchanged(run.split(), run.settings().to_dict(), str(run_dir / "split.json"))
    batch = []
    for path in images:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image {str(path)!r} does not exist")
        try:
            batch.append(load_image(path, image_size).numpy())
        except UNREADABLE_IMAGE_ERRORS as error:
            raise ValueError(f"cannot read image {str(path)!r} ({error}): expected a PNG, JPEG or other file PIL opens") from None
    models = [load_retrained(run_dir, directory, rebuild_cache=rebuild_cache) for directory in retrained_models(run_dir)]
    # In batches (analysis/batches.py): a long list of images is never one array on the device.
    probabilities = np.mean([batched_probabilities(model.probabilities, batch)[0] for model in models], axis=0)
    classes = models[0].classes
    ranked = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[: min(top, len(classes))]
        ranked.append([(classes[i], float(row[i])) for i in order])
    return ranked

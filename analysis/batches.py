"""Evaluation in batches: a model's test probabilities without the test set in memory at once.

``retrain`` and ``predict`` read their images either as arrays (an in-memory run) or as views of
the data cache (``trainables.cache.ImageView``, a streamed run). Both are sliced here ``batch``
images at a time, so a streamed run's private memory holds one batch of pixels and the (N,
classes) probabilities, never the set: ``image_batches`` is the one reader, and
``batched_probabilities`` computes the plain and the flip-TTA probabilities from one read of
each batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["EVAL_BATCH_IMAGES", "batched_probabilities", "image_batches", "mirrored"]

EVAL_BATCH_IMAGES = 128  # images read at a time while evaluating (at 224 px: 19 MB of uint8, 77 MB as float)


def mirrored(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images mirrored left to right (numpy; trainables.augment.flip_horizontal flips a
    training batch's chosen images on the device)."""
    return np.ascontiguousarray(np.asarray(images)[..., ::-1])


def image_batches(images, batch: int = EVAL_BATCH_IMAGES) -> Iterator[np.ndarray]:
    """Consecutive runs of ``batch`` images of ``images`` (an array or a cache view), in order,
    each as a uint8 array: the only copy of pixels an evaluation holds."""
    if batch < 1:
        raise ValueError(f"The value of `batch` is {batch}, but must be an integer >= 1.")
    for start in range(0, len(images), batch):
        yield np.asarray(images[start : start + batch])


def batched_probabilities(
    probabilities: Callable[[np.ndarray], np.ndarray], images, tta: bool = False, batch: int = EVAL_BATCH_IMAGES
) -> tuple[np.ndarray, np.ndarray | None]:
    """``probabilities`` over ``images`` batch by batch, and with ``tta`` the flip-TTA probabilities
    (the mean of each image's and its mirror image's), else None; each batch is read once."""
    plain, flipped = [], []
    for pixels in image_batches(images, batch):
        p = probabilities(pixels)
        plain.append(p)
        if tta:
            flipped.append((p + probabilities(mirrored(pixels))) / 2.0)
    if not plain:  # no image: whatever the model says of an empty batch, as before
        empty = np.asarray(images[0:0])
        return probabilities(empty), (probabilities(empty) if tta else None)
    return np.concatenate(plain), (np.concatenate(flipped) if tta else None)

"""A trainable that records the order in which a streamed trial reads its training images, around
the real one (``TRAINABLE = "tests.order_probe:train"``).

The trial's cache view is replaced by one that notes every batch of positions read from it; after
each epoch the positions of that epoch are saved to ``PROBE_DIR/epoch-<n>.npy``. ``quasi_random_bytes``
(a config key, popped here) sets trainables.streaming.QUASI_RANDOM_ENV in this trial's process,
as it would be set on a node whose memory is smaller than the cache.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from trainables.cache import ImageView
from trainables.classifier import train_classifier
from trainables.streaming import QUASI_RANDOM_ENV


class RecordingView(ImageView):
    """An ImageView that keeps the positions of every index-array read (the streamed batches)."""

    def __init__(self, base, index):
        super().__init__(base, index)
        self.reads: list[np.ndarray] = []

    def __getitem__(self, index):
        if isinstance(index, np.ndarray):
            self.reads.append(index.copy())
        return super().__getitem__(index)


def train(config, data, report, checkpoints=None):
    config = dict(config)
    probe_dir = Path(config.pop("probe_dir"))
    threshold = config.pop("quasi_random_bytes", None)
    view = RecordingView(data.train_images.base, data.train_images.index)
    data = dataclasses.replace(data, train_images=view)

    def save_then_report(metrics):
        np.save(probe_dir / f"epoch-{metrics['epoch']}.npy", np.concatenate(view.reads))
        view.reads.clear()
        report(metrics)

    saved = os.environ.get(QUASI_RANDOM_ENV)
    if threshold is not None:
        os.environ[QUASI_RANDOM_ENV] = str(threshold)
    try:
        train_classifier(config, data, save_then_report, checkpoints)
    finally:
        if saved is None:
            os.environ.pop(QUASI_RANDOM_ENV, None)
        else:
            os.environ[QUASI_RANDOM_ENV] = saved

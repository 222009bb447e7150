"""A trainable that fails on purpose, by the trial's ``fault`` parameter, around the real one.

- ``raise``: raises RuntimeError before training (every attempt).
- ``nan``: trains with an absurd learning rate, so the loss becomes NaN or infinite.
- ``kill``: the worker process kills itself (SIGKILL) after its first epoch, on its first attempt
  only; the retry resumes from that epoch's checkpoint.
- ``oom``: trains behind a one-image "GPU" (tests/memory_limit.py): CUDA's out-of-memory error at
  every micro-batch, in each of the trial's workers.
"""

from __future__ import annotations

import os
import signal

from tests.memory_limit import MemoryLimit
from trainables.classifier import train_classifier


def train(config, data, report, checkpoints=None):
    config = dict(config)
    fault = config.pop("fault", "none")
    if fault == "raise":
        raise RuntimeError("injected failure")
    if fault == "nan":
        config.update(optimizer="sgd", lr=1e30, momentum=0.0)
    first_attempt = checkpoints is None or checkpoints.load() is None

    def report_then_maybe_die(metrics):
        report(metrics)
        if fault == "kill" and first_attempt and metrics["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    if fault == "oom":
        with MemoryLimit(images=1):
            train_classifier(config, data, report, checkpoints)
        return
    train_classifier(config, data, report_then_maybe_die, checkpoints)

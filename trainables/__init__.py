"""What one trial does. Nothing here imports Ray: trainables run and test without a cluster.

A trainable is ``fn(config, data, report, checkpoints=None)``; TRAINABLES maps the names a space
file's ``TRAINABLE`` setting may use to ``"module:function"`` paths, imported only when used so
that the CLI's ``--help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["TRAINABLES", "get_trainable"]

TRAINABLES = {
    "classifier": "trainables.classifier:train_classifier",
}


def get_trainable(name: str) -> Callable:
    from trainables._names import did_you_mean

    if name not in TRAINABLES:
        raise ValueError(
            f"unknown trainable {name!r}: expected one of {sorted(TRAINABLES)}" + did_you_mean(name, TRAINABLES)
        )
    module, function = TRAINABLES[name].split(":")
    return getattr(importlib.import_module(module), function)

"""What one trial does. Nothing here imports Ray: trainables run and test without a cluster.

A trainable is ``fn(config, data, report, checkpoints=None)``; TRAINABLES maps the names a space
file's ``TRAINABLE`` setting may use to ``"module:function"`` paths, imported only when used so
that the CLI's ``--help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["CONFIGS", "TRAINABLES", "get_config_class", "get_trainable"]

TRAINABLES = {
    "classifier": "trainables.classifier:train_classifier",
    "features": "trainables.features:train_features",
}
# The config class each registered trainable validates its config with (``from_mapping``, rejecting
# unknown keys), so that the dry run checks every sampled config before any trial starts.
CONFIGS = {
    "classifier": "trainables.classifier:TrialConfig",
    "features": "trainables.features:FeatureConfig",
}


def get_trainable(name: str) -> Callable:
    """The trainable called ``name`` in TRAINABLES, or any importable ``"package.module:function"``."""
    from trainables._names import did_you_mean

    if name not in TRAINABLES and ":" not in name:
        raise ValueError(
            f"unknown trainable {name!r}: expected one of {sorted(TRAINABLES)} or 'package.module:function'"
            + did_you_mean(name, TRAINABLES)
        )
    module, _, function = TRAINABLES.get(name, name).partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"trainable {name!r} cannot be imported: {error}") from None


def get_config_class(name: str) -> type | None:
    """The config class of trainable ``name``, or None for a custom trainable (it checks its own)."""
    if name not in CONFIGS:
        return None
    module, _, attribute = CONFIGS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)

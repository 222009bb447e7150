"""What one trial does. Nothing here imports Ray: trainables run and test without a cluster.

A trainable is ``fn(config, data, report, checkpoints=None)``; TRAINABLES maps the names a space
file's ``TRAINABLE`` setting may use to ``"module:function"`` paths, imported only when used so
that the CLI's ``--help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["CONFIGS", "MUTABLE", "TRAINABLES", "get_config_class", "get_mutable_params", "get_trainable"]

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

# The config keys each trainable can change between two epochs of one trial (a PBT clone
# continues from its parent's checkpoint with them mutated); absent: it cannot.
MUTABLE = {"classifier": "trainables.classifier:PBT_MUTABLE"}


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


def get_mutable_params(name: str) -> frozenset[str] | None:
    """The config keys trainable ``name`` can change mid-training, or None when it declares none."""
    if name not in MUTABLE:
        return None
    module, _, attribute = MUTABLE[name].partition(":")
    return frozenset(getattr(importlib.import_module(module), attribute))

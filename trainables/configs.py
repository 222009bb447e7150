"""Building a trainable's frozen config dataclass from a trial's config mapping; byte thresholds
that an environment variable may override."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, TypeVar

import numpy as np

from trainables.names import did_you_mean

__all__ = ["bytes_from_env", "config_from_mapping"]

Config = TypeVar("Config")


def config_from_mapping(cls: type[Config], values: Mapping[str, Any], what: str = "trial parameter") -> Config:
    """``cls(**values)``, rejecting unknown keys (naming the closest field) and converting numbers:
    Optuna and numpy hand over ints for floats, floats or numpy integers for ints, 0/1 for flags."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown {what} {key!r}" + did_you_mean(key, fields))
        kind = type(fields[key].default)
        if kind is float and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            value = float(value)
        elif kind is int and isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        elif kind is int and isinstance(value, np.integer):
            value = int(value)
        elif kind is bool and isinstance(value, (int, np.integer)) and value in (0, 1):
            value = bool(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"{what} {key!r} is {value!r}, but must be {kind.__name__}")
        kwargs[key] = value
    return cls(**kwargs)


def bytes_from_env(name: str, default: int) -> int:
    """The byte count in environment variable ``name`` where it is set (a non-negative integer),
    else ``default``. Read at each call, in the process that decides (driver or trial worker)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} is {text!r}, but must be a number of bytes (an integer >= 0), or unset for {default}")
    return value

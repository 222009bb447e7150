"""Closest-name suggestions for error messages about user input."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(name: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``name``, else an empty string."""
    match = closest(name, choices)
    return f" (did you mean {match!r}?)" if match else ""

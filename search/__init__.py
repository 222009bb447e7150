"""How a search runs: the CLI (``python -m search``), its config (search/config/: settings, space
files, sampling), the strategies (search/strategies/: samplers, schedulers) and the engine.

Only the engine (``search.engine`` and the modules it joins, one per job) imports Ray; the CLI,
the config and ``search.prepare`` import in milliseconds, so bad input fails without Ray.

The Python API (``search/api.py``): ``from search import run, resume, open_run``. It is imported
on first use, so that ``import search.config.settings`` (analysis reads a run's settings with it)
does not import the API, which imports the analysis.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Run", "open_run", "resume", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("search.api"), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")

"""How a search runs: the CLI (``python -m search``), the settings, space files, and the engine.

Only the engine (``search.engine`` and the modules it joins, one per job) imports Ray; the CLI,
settings, space files and ``search.prepare`` import in milliseconds, so bad input fails without Ray.

The Python API (``search/api.py``): ``from search import run, resume, open_run``.
"""

from search.api import Run, open_run, resume, run

__all__ = ["Run", "open_run", "resume", "run"]

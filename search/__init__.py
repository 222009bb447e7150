"""How a search runs: the CLI (``python -m search``), the settings, space files, and the engine.

Only ``search.engine`` imports Ray; everything else here imports in milliseconds.

The Python API (``search/api.py``): ``from search import run, resume, open_run``.
"""

from search.api import Run, open_run, resume, run

__all__ = ["Run", "open_run", "resume", "run"]

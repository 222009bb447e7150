"""How a search runs: the CLI (``python -m search``), the settings, space files, and the engine.

Only ``search.engine`` imports Ray; everything else here imports in milliseconds.
"""

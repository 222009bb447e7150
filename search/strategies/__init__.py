"""Search strategies: how the next trial is chosen and when a trial stops, one registry entry each.

registry.py (the registry, a dict filled by a decorator), samplers.py (``--sampler``: Optuna
samplers), schedulers.py (``--scheduler``: Ray Tune schedulers), grid_sampler.py (the grid), and
searcher.py (both assembled for Ray Tune; the one module here that imports Ray at import time).
``check_strategies`` is where a run's sampler and scheduler names and settings are checked.
"""

from __future__ import annotations

from search.config.settings import Settings
from search.config.spaces import SpaceFile
from search.strategies.samplers import SAMPLERS
from search.strategies.schedulers import SCHEDULERS

__all__ = ["SAMPLERS", "SCHEDULERS", "check_names", "check_strategies"]


def check_names(settings: Settings) -> None:
    """ValueError when ``sampler`` or ``scheduler`` is no registered name, naming the closest one."""
    SAMPLERS.entry(settings.sampler)
    SCHEDULERS.entry(settings.scheduler)


def check_strategies(settings: Settings, space: SpaceFile) -> None:
    """The names, then what each strategy cannot run (grid: a continuous parameter; PBT: ...)."""
    check_names(settings)
    for registry, name in ((SAMPLERS, settings.sampler), (SCHEDULERS, settings.scheduler)):
        registry[name].check(settings, space)

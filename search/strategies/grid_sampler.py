"""An Optuna sampler that walks a fixed list of points: trial number n gets point n.

Optuna's own GridSampler calls ``Study.stop`` once the grid is spent, which raises outside
``Study.optimize`` (Ray's OptunaSearch uses ask and tell); this one only samples. Built from
Optuna's public BaseSampler interface. Defined in its own module so that Ray can pickle it.
"""

from __future__ import annotations

from typing import Any

import optuna

__all__ = ["GridSampler"]


class GridSampler(optuna.samplers.BaseSampler):
    def __init__(self, points: list[dict[str, Any]]):
        if not points:
            raise ValueError("a grid needs at least one point")
        self.points = points
        self._fallback = optuna.samplers.RandomSampler(seed=0)

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        point = self.points[trial.number % len(self.points)]
        if param_name in point:
            return point[param_name]
        # A parameter the grid was not built with (the space changed): sampled at random.
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

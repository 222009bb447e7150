"""How the next trial is chosen and when a trial stops: the sampler (search/strategies/samplers.py) behind
Ray's OptunaSearch, and the scheduler (search/strategies/schedulers.py). Both are registry entries; this
module only assembles them for Ray Tune."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from search import _adapter
from search.config.sampling import sample_space
from search.config.settings import Settings
from search.config.spaces import SpaceFile, SpaceFunction
from search.strategies.samplers import SAMPLERS, nsga2_population
from search.strategies.schedulers import SCHEDULERS

__all__ = ["STUDY", "build_sampler", "build_scheduler", "build_searcher", "describe_searcher", "nsga2_population", "search_and_space"]

# The Optuna study's name, in a fresh search and in the warm-started study of an extension.
STUDY = "search"


def build_searcher(space: SpaceFile, settings: Settings, concurrency: int, storage=None):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = settings.objective_names
    searcher = (_MultiObjectiveOptunaSearch if objectives else OptunaSearch)(
        space=SpaceFunction(space.path, space.text),
        # With objectives, a list: Optuna's study gets one direction per objective, and each
        # finished trial's last result gives its values (early-stopped trials included).
        metric=[settings.metric, *objectives] if objectives else settings.metric,
        mode=[settings.mode, *settings.objective_modes] if objectives else settings.mode,
        sampler=build_sampler(settings, space),
        study_name=STUDY,
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=concurrency)


def search_and_space(space: SpaceFile, settings: Settings, concurrency: int, storage=None) -> tuple[Any, dict]:
    """Ray Tune's search algorithm and param_space: OptunaSearch (param_space empty), or, for a
    scheduler that takes no searcher, the population the sampler proposes up front."""
    if SCHEDULERS[settings.scheduler].takes_searcher:
        return build_searcher(space, settings, concurrency, storage=storage), {}
    return _population(space, settings, concurrency)


def build_sampler(settings: Settings, space: SpaceFile):
    return SAMPLERS[settings.sampler].build(settings, space)


def _population(space: SpaceFile, settings: Settings, concurrency: int) -> tuple[Any, dict]:
    """Ray's BasicVariantGenerator over ``settings.trials`` configurations the sampler proposes up
    front (asked, never told: no feedback), for a scheduler that allows no searcher beside it.

    Ray completes each point from param_space, which must name every key: a conditional
    parameter a point lacks is None there, and the trial drops it (search/trial.py)."""
    from ray.tune.search import BasicVariantGenerator

    samples = sample_space(space, build_sampler(settings, space), settings.trials, tell=False, direction="maximize")
    configs = [sample.params | sample.constants for sample in samples]
    param_space = {key: None for config in configs for key in config}
    generator = BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=concurrency, random_state=settings.seed)
    return generator, param_space


class _MultiObjectiveOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling Optuna FAIL for a multi-objective trial without every value.

    Ray's own class tells a list holding None (a trial that ended before reporting a cost), which
    Optuna rejects: the trial would stay RUNNING in the study for good. A diverged trial is FAIL
    too: its accuracy of 0 beside the smallest model's size would put it on the Pareto front, and
    NSGA-II breeds from the front. Single-objective searches use Ray's class itself.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        completed = _adapter.completed_trial_ids(self)
        if isinstance(self.metric, list) and trial_id not in completed:
            result = result or {}
            values = [result.get(name) for name in self.metric]
            if result.get("diverged") or not all(_finite(v) for v in values):
                from optuna.trial import TrialState

                _adapter.optuna_study(self).tell(_adapter.optuna_trial(self, trial_id), state=TrialState.FAIL)
                completed.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_scheduler(settings: Settings, space: SpaceFile):
    return SCHEDULERS[settings.scheduler].build(settings, space)


def describe_searcher(search_alg) -> dict[str, Any]:
    """What resume.json records of a searcher: its class, its sampler's, and its study's trials."""
    searcher = getattr(search_alg, "searcher", search_alg)  # inside the ConcurrencyLimiter
    study = _adapter.optuna_study(searcher)
    return {
        "searcher": type(searcher).__name__,
        # The study's sampler is the one OptunaSearch was given (Optuna's public Study.sampler).
        "sampler": type(study.sampler if study is not None else None).__name__,
        "study_trials": len(study.trials) if study is not None else 0,
        "completed_study_trials": len([t for t in study.trials if t.state.name == "COMPLETE"]) if study else 0,
    }

"""How the next trial is chosen and when a trial stops: the Optuna sampler behind Ray's
OptunaSearch, and the Ray Tune scheduler (ASHA, or FIFO as a baseline)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from search import _adapter
from search.settings import Settings
from search.spaces import SpaceFile, SpaceFunction

__all__ = ["STUDY", "nsga2_population"]

# The Optuna study's name, in a fresh search and in the warm-started study of an extension.
STUDY = "search"


def _searcher(space: SpaceFile, settings: Settings, concurrency: int, storage=None):
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
        sampler=_sampler(settings),
        study_name=STUDY,
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=concurrency)


def _sampler(settings: Settings):
    import optuna

    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    if settings.sampler == "nsga2":
        # Optuna's default population (50) would spend a small budget on one random generation:
        # about four generations of at least four trials each instead.
        return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=nsga2_population(settings.trials))
    # TPE starts modelling after a quarter of the budget (at most 10 random trials), and
    # constant_liar keeps concurrent trials from being proposed on top of each other. With several
    # objectives it splits trials by Pareto rank instead of by value.
    return optuna.samplers.TPESampler(
        seed=settings.seed, n_startup_trials=min(10, max(2, settings.trials // 4)), constant_liar=True
    )


def nsga2_population(trials: int) -> int:
    """NSGA-II's generation size for a budget of ``trials``: a quarter of it, within [4, 50]."""
    return max(4, min(50, trials // 4))


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


def _scheduler(settings: Settings):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if settings.scheduler == "fifo":
        return FIFOScheduler()

    return ASHAScheduler(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        max_t=settings.max_epochs,
        grace_period=settings.grace_period_epochs,
        reduction_factor=settings.reduction_factor,
    )


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

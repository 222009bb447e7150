"""The ``--scheduler`` registry: when a trial stops early, or (PBT) what it continues from.

One entry per Ray Tune scheduler; each builder imports Ray itself, so this module is Ray-free at
import and the CLI checks ``--scheduler`` without starting Ray. All of them count time in the
``epoch`` every trial reports and judge trials by ``settings.metric``.
"""

from __future__ import annotations

from typing import Any

from search.config.sampling import parameters
from search.strategies.registry import Registry
from trainables import get_mutable_params
from trainables.names import did_you_mean

__all__ = ["SCHEDULERS", "ClipToSpace", "pbt_mutations"]

SCHEDULERS = Registry("scheduler")


@SCHEDULERS.register("asha", settings=("max_epochs", "grace_period_epochs", "reduction_factor"), stops="ASHA")
def asha(settings, space):
    """Asynchronous successive halving, the default: stops poor trials at rungs; best for many trials."""
    from ray.tune.schedulers import ASHAScheduler

    return _in_order(ASHAScheduler)(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        max_t=settings.max_epochs,
        grace_period=settings.grace_period_epochs,
        reduction_factor=settings.reduction_factor,
    )


@SCHEDULERS.register("fifo")
def fifo(settings, space):
    """No early stopping: every trial trains max_epochs. A baseline, or for one-report trainables."""
    from ray.tune.schedulers import FIFOScheduler

    return _in_order(FIFOScheduler)()


@SCHEDULERS.register("hyperband", settings=("max_epochs", "reduction_factor"), stops="HyperBand")
def hyperband(settings, space):
    """Synchronous HyperBand brackets (with TPE: the BOHB idea); pauses trials at rungs, for budgets of 20+."""
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        max_t=settings.max_epochs,
        reduction_factor=settings.reduction_factor,
    )


@SCHEDULERS.register("median", settings=("grace_period_epochs",), stops="median stopping")
def median(settings, space):
    """Median stopping: ends a trial whose best result is below the median of others' at that epoch."""
    from ray.tune.schedulers import MedianStoppingRule

    return _in_order(MedianStoppingRule)(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        grace_period=settings.grace_period_epochs,
        min_samples_required=3,
    )


def _in_order(scheduler_class: type) -> type:
    """``scheduler_class`` (Ray's FIFOScheduler or one that inherits its choice) choosing the next
    trial to run as Ray's does, the first PENDING trial in the controller's list, else the first
    PAUSED one, but without scanning the trials that have ended at the head of that list: Ray's
    scan of every trial at every step took a quarter of the driver's time at 7,500 trials of a
    10,000-trial search of short trials. A TERMINATED trial never runs again, and the list only
    grows; a list that is not the one last seen (a restored run's) is scanned from its start."""
    from ray.tune.experiment import Trial

    class InOrder(scheduler_class):
        _ended, _last_ended = 0, None  # how many trials at the head of the list have ended; the last of them

        def choose_trial_to_run(self, tune_controller):
            trials = tune_controller.get_trials()
            start = self._ended
            if start > len(trials) or (start and trials[start - 1] is not self._last_ended):
                start = 0
            while start < len(trials) and trials[start].status == Trial.TERMINATED:
                start += 1
            self._ended, self._last_ended = start, (trials[start - 1] if start else None)
            waiting = trials[start:]
            for status in (Trial.PENDING, Trial.PAUSED):
                chosen = next((trial for trial in waiting if trial.status == status), None)
                if chosen is not None:
                    return chosen
            return None

    InOrder.__name__ = scheduler_class.__name__
    return InOrder


def _check_pbt(settings, space) -> None:
    if settings.workers_per_trial > 1:
        raise ValueError(
            f"`scheduler` is 'pbt', but `workers_per_trial` is {settings.workers_per_trial}: PBT's clones go "
            "through one-worker trials' checkpoints; use --workers-per-trial 1 or another scheduler"
        )
    pbt_mutations(settings, space)


# Ray's PBT refuses a searcher beside it: the population is drawn up front (search/strategies/searcher.py).
@SCHEDULERS.register(
    "pbt", settings=("pbt_interval_epochs", "pbt_mutate", "seed", "concurrency", "trials"), check=_check_pbt, takes_searcher=False
)
def pbt(settings, space):
    """Population Based Training: every few epochs the worst quarter clones the best's checkpoint and mutates."""
    import random

    from ray.tune.schedulers import PopulationBasedTraining

    mutations = pbt_mutations(settings, space)
    random.seed(settings.seed)  # PBT's explore and its choice of a trial to clone use `random`
    return PopulationBasedTraining(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        perturbation_interval=settings.pbt_interval_epochs,
        hyperparam_mutations={name: _ray_domain(d) for name, d in mutations.items()},
        custom_explore_fn=ClipToSpace(mutations),
        quantile_fraction=0.25,
        resample_probability=0.25,
        # The whole population at once (--concurrency >= --trials): synchronous PBT, every trial
        # waits at each interval for the others, so each interval compares the whole population.
        # Otherwise asynchronous: a trial compares itself with those alive when it reports.
        synch=settings.concurrency >= settings.trials,
    )


def pbt_mutations(settings, space) -> dict[str, Any]:
    """``{parameter: Optuna distribution}`` that PBT mutates, from the space file.

    ``settings.pbt_mutate`` names them (comma-separated); empty: every parameter that the space
    suggests unconditionally and that the trainable can change mid-training (its PBT_MUTABLE).
    ValueError, naming it, for a parameter the space lacks, a conditional one, or one the
    trainable cannot change without starting over.
    """

    where = f"space file {str(space.path)!r}"
    mutable = get_mutable_params(settings.trainable)
    if mutable is None:
        raise ValueError(
            f"`scheduler` is 'pbt', but trainable {settings.trainable!r} declares no parameters it can change "
            "mid-training (PBT_MUTABLE): use another scheduler"
        )
    found = parameters(space, settings)
    asked = [name.strip() for name in settings.pbt_mutate.split(",") if name.strip()]
    for name in asked:
        if name not in found.distributions:
            raise ValueError(
                f"`pbt_mutate` names {name!r}, but {where} suggests no such parameter"
                + did_you_mean(name, found.distributions)
            )
        if name in found.conditional:
            raise ValueError(
                f"`pbt_mutate` names {name!r}, but it is conditional in {where} (some trials lack it): "
                "a clone keeps the parent's conditions, so PBT mutates only unconditional parameters"
            )
        if name not in mutable:
            raise ValueError(
                f"`pbt_mutate` names {name!r}, but trainable {settings.trainable!r} cannot change it mid-training "
                f"(a clone continues from the parent's checkpoint); it can change {sorted(mutable)}"
            )
    names = asked or [n for n in found.distributions if n in mutable and n not in found.conditional]
    if not names:
        raise ValueError(
            f"`scheduler` is 'pbt', but {where} suggests no unconditional parameter that trainable "
            f"{settings.trainable!r} can change mid-training ({sorted(mutable)}): PBT would have nothing to mutate"
        )
    return {name: found.distributions[name] for name in names}


def _ray_domain(distribution) -> Any:
    """Ray's resampling domain for an Optuna distribution: choices as a list (mutated by a step left
    or right), numbers as a range (mutated by x0.8 or x1.2, then clipped to it by ClipToSpace)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from ray import tune

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    low, high = distribution.low, distribution.high
    if isinstance(distribution, FloatDistribution):
        if distribution.step is not None:
            return tune.quniform(low, high, distribution.step)
        return tune.loguniform(low, high) if distribution.log else tune.uniform(low, high)
    if distribution.log:
        return tune.lograndint(low, high + 1)
    return tune.qrandint(low, high, distribution.step)


class ClipToSpace:
    """PBT's custom explore function: keep each mutated number inside its distribution's range and step."""

    def __init__(self, mutations: dict[str, Any]):
        self.mutations = mutations

    def __call__(self, config: dict) -> dict:
        from optuna.distributions import CategoricalDistribution

        for name, distribution in self.mutations.items():
            if isinstance(distribution, CategoricalDistribution) or name not in config:
                continue
            value = min(max(config[name], distribution.low), distribution.high)
            step = getattr(distribution, "step", None)
            if step is not None:
                value = distribution.low + round((value - distribution.low) / step) * step
                value = min(value, distribution.high)
            config[name] = int(value) if isinstance(config[name], int) else float(value)
        return config

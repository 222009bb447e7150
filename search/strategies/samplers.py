"""The ``--sampler`` registry: how the next trial's parameters are chosen (an Optuna sampler).

One entry per sampler; each builder imports Optuna itself, so this module is Ray- and Optuna-free
at import. A new sampler is one decorated function here. search/strategies/searcher.py hands the built
sampler to Ray's OptunaSearch.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

from search.config.sampling import parameters
from search.strategies.registry import Registry

__all__ = ["SAMPLERS", "constant_liar", "grid_points", "grid_size", "nsga2_population"]

SAMPLERS = Registry("sampler")


@SAMPLERS.register("tpe", settings=("seed", "trials", "repeats"))
def tpe(settings, space):
    """Seeded TPE, the default: models good and bad trials, multi-objective too; good from ~20 trials."""
    import optuna

    # TPE starts modelling after a quarter of the budget (at most 10 random trials). With several
    # objectives it splits trials by Pareto rank instead of by value.
    return optuna.samplers.TPESampler(
        seed=settings.seed, n_startup_trials=min(10, max(2, settings.trials // 4)),
        constant_liar=constant_liar(settings, space),
    )  # fmt: skip


def constant_liar(settings, space) -> bool:
    """Whether TPE counts the trials still running as bad ones when it proposes the next.

    The liar keeps concurrent trials from being proposed on top of each other. In a discrete space
    with ``repeats = "avoid"``, the searcher's ledger already keeps them from being exact repeats,
    and the liar's pessimism also steers away from the neighbours of every running trial, the good
    region included. There it cost search quality at 32 concurrent trials, and it is off
    (benchmarks/search_quality.py, RESULTS.md: "Pending trials"). A continuous space keeps it.
    With one trial at a time nothing is pending, and the two are the same.
    """
    return not (settings.repeats == "avoid" and grid_size(settings, space) is not None)


@SAMPLERS.register("random", settings=("seed",))
def random(settings, space):
    """Uniform random sampling: a baseline, and the safest choice for a handful of trials."""
    import optuna

    return optuna.samplers.RandomSampler(seed=settings.seed)


@SAMPLERS.register("nsga2", settings=("seed", "trials"))
def nsga2(settings, space):
    """NSGA-II, a genetic algorithm for multi-objective searches (--objectives) with 30+ trials."""
    import optuna

    # Optuna's default population (50) would spend a small budget on one random generation:
    # about four generations of at least four trials each instead.
    return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=nsga2_population(settings.trials))


def nsga2_population(trials: int) -> int:
    """NSGA-II's generation size for a budget of ``trials``: a quarter of it, within [4, 50]."""
    return max(4, min(50, trials // 4))


def _single_objective(settings, space) -> None:
    if settings.objective_names:
        raise ValueError(
            f"`sampler` is {settings.sampler!r}, but {settings.sampler} optimises one objective and "
            f"`objectives` is {settings.objectives!r}: use 'tpe' or 'nsga2' for a multi-objective search"
        )


def _startup(settings) -> int:
    return min(10, max(2, settings.trials // 4))


@SAMPLERS.register("cmaes", settings=("seed", "trials"), check=_single_objective)
def cmaes(settings, space):
    """CMA-ES on the numeric parameters (categorical ones sampled at random): long, continuous searches."""
    import optuna

    # The first quarter of the budget (at most 10) is random, as for TPE; categorical and
    # conditional parameters are sampled at random throughout (CMA-ES models numbers only).
    return optuna.samplers.CmaEsSampler(
        seed=settings.seed, n_startup_trials=_startup(settings), warn_independent_sampling=False
    )


@SAMPLERS.register("gp", settings=("seed", "trials"))
def gp(settings, space):
    """Gaussian-process Bayesian optimisation: the most from a small budget (10-100 trials) of costly ones."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(
            seed=settings.seed, n_startup_trials=_startup(settings), warn_independent_sampling=False
        )


@SAMPLERS.register("qmc", settings=("seed",))
def qmc(settings, space):
    """Scrambled Sobol quasi-random points: random search that covers the space more evenly."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=settings.seed, warn_independent_sampling=False
        )


def _check_grid(settings, space) -> None:
    points = grid_points(settings, space)
    if settings.trials > len(points):
        raise ValueError(
            f"`trials` is {settings.trials}, but the grid of space file {str(space.path)!r} holds "
            f"{len(points)} points: set --trials {len(points)} (or fewer: the first points of the seeded order)"
        )


@SAMPLERS.register("grid", settings=("seed", "trials"), check=_check_grid)
def grid(settings, space):
    """Every combination of categorical and stepped parameters, in a seeded order: small discrete spaces."""
    from search.strategies.grid_sampler import GridSampler  # imports optuna: not at this module's import

    return GridSampler(grid_points(settings, space))


def grid_size(settings, space) -> int | None:
    """The number of points of a discrete space's grid (``grid_points``); None for a space with a
    continuous parameter."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    size = 1
    for distribution in parameters(space, settings).distributions.values():
        if isinstance(distribution, CategoricalDistribution):
            size *= len(distribution.choices)
        elif isinstance(distribution, IntDistribution):
            size *= (distribution.high - distribution.low) // distribution.step + 1
        elif getattr(distribution, "step", None) is not None:
            size *= int(round((distribution.high - distribution.low) / distribution.step)) + 1
        else:
            return None
    return size


def grid_points(settings, space) -> list[dict[str, Any]]:
    """The grid of ``space``: each combination of its parameters' values, shuffled by ``settings.seed``.

    Categorical parameters give their choices, integer and stepped float parameters every step in
    their range. A continuous parameter has no grid: ValueError naming it.
    """
    import numpy as np
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values: dict[str, list] = {}
    for name, distribution in sorted(parameters(space, settings).distributions.items()):
        if isinstance(distribution, CategoricalDistribution):
            values[name] = list(distribution.choices)
        elif isinstance(distribution, IntDistribution):
            values[name] = list(range(distribution.low, distribution.high + 1, distribution.step))
        elif isinstance(distribution, FloatDistribution) and distribution.step is not None:
            steps = int(round((distribution.high - distribution.low) / distribution.step))
            values[name] = [distribution.low + k * distribution.step for k in range(steps + 1)]
        else:
            raise ValueError(
                f"`sampler` is 'grid', but parameter {name!r} of space file {str(space.path)!r} is continuous "
                f"({distribution}): give it a step (trial.suggest_float({name!r}, low, high, step=...)) "
                "or make it categorical, or use another sampler"
            )
    points = [dict(zip(values, combination)) for combination in itertools.product(*values.values())]
    order = np.random.default_rng(settings.seed).permutation(len(points))
    return [points[i] for i in order]

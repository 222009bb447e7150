"""Sampling a space file into trial configs, written once: the dry run that checks every sampled
config before any trial starts, the parameters' distributions, the corners GPU packing measures
and the population PBT starts from all ask ``sample_space``."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

from search.config.settings import Settings
from search.config.spaces import SpaceFile, SpaceParameterError, naming_errors, trial_defaults
from trainables import TRAINABLES, get_trainable
from trainables.names import did_you_mean

__all__ = ["Parameters", "Sample", "check_start_point", "dry_run", "parameters", "sample_space"]


@dataclass(frozen=True)
class Sample:
    """One trial's worth of a space: what the sampler chose, and what ``space(trial)`` returned."""

    params: dict[str, Any]  # the suggested parameters
    constants: dict[str, Any]  # the dict space(trial) returned ({} for None)
    distributions: dict[str, Any]  # name -> Optuna distribution

    def config(self, settings: Settings) -> dict[str, Any]:
        """The trial's config as the dry run checks it: the run's trial settings (one thread),
        then the parameters, then the constants."""
        return trial_defaults(settings, threads=1) | self.params | self.constants


def sample_space(
    space: SpaceFile, sampler: Any, samples: int, tell: bool = True, direction: str = "minimize", start_with: list[dict] = ()
) -> Iterator[Sample]:
    """Ask an Optuna study with ``sampler`` for ``samples`` trials of ``space``, one at a time.

    ``tell``: each trial is told 0.0 after it is yielded (a dry sample; False: asked, never told,
    so a searcher's sampler gets no feedback). ``start_with``: the first trials take these
    parameters (Optuna's enqueued trials; the sampler gives the rest), each checked by
    ``check_start_point``. ValueError names the space file when ``space(trial)`` raises or returns
    neither a dict nor None."""
    import optuna  # imports in a second: not on the CLI's --help path

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, direction=direction)
    for point in start_with:
        study.enqueue_trial(point, skip_if_exists=False)
    where = f"space file {str(space.path)!r}"
    for k in range(samples):
        trial = study.ask()
        try:
            with warnings.catch_warnings():  # Optuna's "out of range" for a fixed value: check_start_point says it
                warnings.filterwarnings("ignore", message="Fixed parameter", category=UserWarning)
                constants = space.space(naming_errors(trial, space.path))
        except SpaceParameterError as error:
            if k < len(start_with):
                raise ValueError(f"`start_with` point {k} ({start_with[k]}) is refused by the {error}") from None
            raise
        except Exception as error:
            raise ValueError(f"{where}: space(trial) raised {type(error).__name__}: {error}") from None
        if constants is not None and not isinstance(constants, dict):
            raise ValueError(f"{where}: space(trial) must return a dict of constants or None, got {type(constants).__name__}")
        if k < len(start_with):
            check_start_point(start_with[k], k, trial.params, trial.distributions, where)
        yield Sample(dict(trial.params), dict(constants or {}), dict(trial.distributions))
        if tell:
            study.tell(trial, 0.0)


def check_start_point(point: dict, k: int, params: dict, distributions: dict, where: str) -> None:
    """ValueError, naming the parameter and the rule, when ``point`` (``start_with``'s ``k``-th)
    names a parameter its trial of the space did not suggest, or a value outside its range."""
    for name, value in point.items():
        if name not in params:
            raise ValueError(
                f"{where}: `start_with` point {k}: {name!r} is not a parameter the space suggests for this point; "
                f"it suggests {sorted(params)}" + did_you_mean(name, params)
            )
        distribution = distributions[name]
        choices = getattr(distribution, "choices", None)
        if choices is not None:
            continue  # a value outside the choices: Optuna refused it in the space's call already
        low, high, step = distribution.low, distribution.high, getattr(distribution, "step", None)
        integer = isinstance(low, int) and isinstance(high, int)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        on_step = number and (step is None or math.isclose((value - low) / step, round((value - low) / step), abs_tol=1e-9))
        if not number or not low <= value <= high or not on_step or (integer and value != int(value)):
            rule = f"{'an integer' if integer else 'a number'} in [{low}, {high}]" + (f" on steps of {step}" if step else "")
            raise ValueError(f"{where}: `start_with` point {k}: {name!r} is {value!r}, but the space suggests {rule}")


def random_sampler(settings: Settings) -> Any:
    """Optuna's RandomSampler, seeded by the run's seed: the dry run's and ``parameters``'."""
    import optuna  # as in sample_space

    return optuna.samplers.RandomSampler(seed=settings.seed)


def dry_run(space: SpaceFile, settings: Settings, samples: int = 16) -> list[dict[str, Any]]:
    """Sample the space ``samples`` times at random and validate every resulting trial config.

    The points of ``start_with`` are checked first, then the samples. Catches, before Ray starts:
    a start point that is not the space's, bad suggest ranges, a non-dict return, unknown parameter names,
    out-of-range values, unknown optimizer or model names, and what the trainable's registry entry
    checks against the run (``check_run``: more epochs or a larger image size than it gives).
    Returns the sampled configs.
    """
    from trainables.models import check_model_name  # imports torch: only when a space is checked

    get_trainable(settings.trainable)
    entry = TRAINABLES.get(settings.trainable)  # None: a custom "package.module:function" checks its own config
    config_class = entry.resolve("config") if entry is not None else None
    check_run = entry.resolve("check_run") if entry is not None else None
    where = f"space file {str(space.path)!r}"
    configs, checked_models = [], set()
    points = settings.start_points
    for sample in sample_space(space, random_sampler(settings), len(points) + samples, start_with=points):
        config = sample.config(settings)
        configs.append(config)
        if config_class is None:
            continue
        try:
            checked = config_class.from_mapping(config)
            if check_run is not None:
                check_run(checked, settings.max_epochs, settings.image_size)
            if (checked.model, checked.weights) not in checked_models:
                check_model_name(checked.model, checked.weights)
                checked_models.add((checked.model, checked.weights))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None
    return configs


@dataclass(frozen=True)
class Parameters:
    """What sampling a space many times shows of its parameters."""

    distributions: dict[str, Any]  # name -> Optuna distribution (the first one seen)
    conditional: frozenset[str]  # absent from some samples, or with a distribution that varies


def parameters(space: SpaceFile, settings: Settings, samples: int = 64) -> Parameters:
    """Sample ``space`` ``samples`` times at random (seeded) and collect each parameter's distribution.

    A parameter is conditional when some sample lacks it or suggests it differently; a condition
    that 64 random samples never meet goes unnoticed. The result is kept per space file, seed and
    count: the ledger, the grid and the TPE builder each ask for it at start-up.
    """
    key = (str(space.path), space.text, settings.seed, samples)
    if key not in _PARAMETERS:
        _PARAMETERS.clear()  # one space per run: keep the last only
        _PARAMETERS[key] = _sample_parameters(space, settings, samples)
    return _PARAMETERS[key]


_PARAMETERS: dict[tuple, Parameters] = {}


def _sample_parameters(space: SpaceFile, settings: Settings, samples: int) -> Parameters:
    seen = [sample.distributions for sample in sample_space(space, random_sampler(settings), samples)]
    distributions: dict[str, Any] = {}
    for sample in seen:
        for name, distribution in sample.items():
            distributions.setdefault(name, distribution)
    conditional = {
        name for name, distribution in distributions.items() if any(s.get(name) != distribution for s in seen)
    }
    return Parameters(distributions=distributions, conditional=frozenset(conditional))

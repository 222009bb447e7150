"""How the next trial is chosen and when a trial stops: the sampler (search/strategies/samplers.py) behind
Ray's OptunaSearch, and the scheduler (search/strategies/schedulers.py). Both are registry entries; this
module only assembles them for Ray Tune. The searcher avoids repeated configurations and tells
stopped trials as the settings say (the rules: search/config/proposals.py)."""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

from search import _adapter
from search.config.proposals import MAX_ASKS, Ledger, outcome
from search.config.sampling import sample_space
from search.config.settings import Settings
from search.config.spaces import SpaceFile, SpaceFunction
from search.strategies.samplers import SAMPLERS, grid_points, grid_size, nsga2_population
from search.strategies.schedulers import SCHEDULERS

__all__ = [
    "STUDY", "avoided_repeats", "build_sampler", "build_scheduler", "build_searcher", "describe_searcher",
    "discrete_grid", "exhausted_because", "nsga2_population", "search_and_space",
]  # fmt: skip

# The Optuna study's name, in a fresh search and in the warm-started study of an extension.
STUDY = "search"

# A discrete space with more points than this is not enumerated (repeats are then rare anyway).
GRID_LIMIT = 100_000


def build_searcher(space: SpaceFile, settings: Settings, concurrency: int, storage=None):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = settings.objective_names
    searcher = OptunaSearch(
        settings,
        _ledger(space, settings, storage) if settings.repeats == "avoid" else None,
        space=SpaceFunction(space.path, space.text),
        # With objectives, a list: Optuna's study gets one direction per objective, and each
        # finished trial's last result gives its values (early-stopped trials included).
        metric=[settings.metric, *objectives] if objectives else settings.metric,
        mode=[settings.mode, *settings.objective_modes] if objectives else settings.mode,
        sampler=build_sampler(settings, space),
        study_name=STUDY,
        storage=storage,
        # An extension's study (``storage``) holds them already, tried.
        points_to_evaluate=settings.start_points if storage is None and settings.start_points else None,
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

    samples = sample_space(space, build_sampler(settings, space), settings.trials, tell=False, direction="maximize",
                           start_with=settings.start_points)  # fmt: skip
    configs = [sample.params | sample.constants for sample in samples]
    param_space = {key: None for config in configs for key in config}
    generator = BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=concurrency, random_state=settings.seed)
    return generator, param_space


class OptunaSearch(RayOptunaSearch):
    """Ray's OptunaSearch (its name kept: resume.json records the searcher's class), telling Optuna
    what search/config/proposals.py decides, and (with a ``ledger``, ``repeats = "avoid"``) never
    proposing a configuration already finished or running.

    Ray's own class tells a multi-objective trial without every value as a list holding None,
    which Optuna rejects (the trial would stay RUNNING in the study for good): FAIL here. A trial
    the scheduler stopped is COMPLETE with its last value, or PRUNED (``stopped_trials``).
    """

    def __init__(self, settings: Settings, ledger: Ledger | None, **kwargs):
        super().__init__(**kwargs)
        self.stopped_trials, self.max_epochs = settings.stopped_trials, settings.max_epochs
        self.ledger = ledger
        self.exhausted = ""  # why the search stopped before its budget, when it did
        self._intermediate: dict[str, dict[int, float]] = {}

    def suggest(self, trial_id: str):
        if self.ledger is None:
            return super().suggest(trial_id)
        asks = 0
        while not self.ledger.exhausted():
            config = super().suggest(trial_id)
            params = _adapter.optuna_trial(self, trial_id).params
            known = self.ledger.known(params)
            if known is None:
                self.ledger.start(trial_id, params)
                return config
            self.ledger.avoided += 1
            self._tell_known(trial_id, known)
            asks += 1
            if asks >= MAX_ASKS:  # the sampler keeps to what it knows: try an untried point
                point = self.ledger.untried()
                if point is None:
                    break
                _adapter.optuna_study(self).enqueue_trial(point, skip_if_exists=False)
        tried = len(self.ledger.outcomes)
        self.exhausted = (
            f"every one of the space's {tried} configurations was tried"
            if self.ledger.exhausted()
            else f"the sampler proposed only tried configurations ({MAX_ASKS} in a row, {tried} tried)"
        )
        return Searcher.FINISHED

    def _tell_known(self, trial_id: str, known) -> None:
        """Tell Optuna the duplicate proposal's known outcome (FAIL while its first trial runs:
        nothing is known yet), and forget it, so that the next suggest asks a new one."""
        from optuna.trial import TrialState

        trial, study = _adapter.optuna_trial(self, trial_id), _adapter.optuna_study(self)
        if known.state == "COMPLETE":
            study.tell(trial, known.values)
        elif known.state == "PRUNED":
            for step, value in known.intermediate.items():
                trial.report(value, step)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
        _adapter.forget_optuna_trial(self, trial_id)

    def on_trial_result(self, trial_id: str, result: dict):
        super().on_trial_result(trial_id, result)
        if not isinstance(self.metric, list) and trial_id not in _adapter.completed_trial_ids(self):
            # What Ray's class reported as this trial's intermediate value (its step: the iteration).
            self._intermediate.setdefault(trial_id, {})[result["training_iteration"]] = result[self.metric]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        completed = _adapter.completed_trial_ids(self)
        if trial_id in completed:
            return super().on_trial_complete(trial_id, result=result, error=error)  # Ray's warning
        max_epochs = int(((result or {}).get("config") or {}).get("max_epochs", self.max_epochs))
        state, values = outcome(result, error, self.metric, self.stopped_trials, max_epochs)
        trial = _adapter.optuna_trial(self, trial_id)
        intermediate = self._intermediate.pop(trial_id, {})
        if self.ledger is not None:
            self.ledger.end(trial_id, trial.params, state, values, intermediate)
        if state == "COMPLETE":  # Ray's class tells it (the last value)
            return super().on_trial_complete(trial_id, result=result, error=error)
        from optuna.trial import TrialState

        _adapter.optuna_study(self).tell(trial, state=TrialState[state])
        completed.add(trial_id)


def discrete_grid(space: SpaceFile, settings: Settings) -> list[dict[str, Any]] | None:
    """The points of a discrete space in a seeded order (search/strategies/samplers.grid_points); None
    for a space with a continuous parameter, or one of more than GRID_LIMIT points."""
    size = grid_size(settings, space)
    return grid_points(settings, space) if size is not None and size <= GRID_LIMIT else None


def _ledger(space: SpaceFile, settings: Settings, storage=None) -> Ledger:
    """The searcher's ledger; for an extension, holding the warm-started study's trials."""
    ledger = Ledger(discrete_grid(space, settings))
    if storage is not None:
        import optuna

        for trial in optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False):
            ledger.seed([(
                trial.user_attrs.get("trial_id", str(trial.number)), trial.params, trial.state.name,
                trial.values if trial.values is None or len(trial.values) > 1 else trial.values[0],
                dict(trial.intermediate_values),
            )])  # fmt: skip
    return ledger


def build_scheduler(settings: Settings, space: SpaceFile):
    return SCHEDULERS[settings.scheduler].build(settings, space)


def exhausted_because(search_alg) -> str:
    """Why the engine's searcher stopped proposing before the budget ("" when it did not)."""
    return getattr(getattr(search_alg, "searcher", search_alg), "exhausted", "")


def avoided_repeats(search_alg) -> int:
    """How many proposals of tried configurations the engine's searcher asked again."""
    ledger = getattr(getattr(search_alg, "searcher", search_alg), "ledger", None)
    return ledger.avoided if ledger is not None else 0


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

"""The run as an Optuna study: export it to any Optuna storage, and score parameter importance.

    python -m search report RUN_DIR                      # writes RUN_DIR/study.db, importance.csv, ...
    optuna-dashboard sqlite:///RUN_DIR/study.db

The engine records each trial's chosen values, not Optuna's distributions. They are recovered by
replaying the run's own space file (``RUN_DIR/space.py``): each recorded trial is enqueued in an
in-memory study and ``space(trial)`` is called on the asked trial, so every ``suggest_*`` call
returns the recorded value and leaves its exact distribution, conditional parameters included.

One Optuna trial per leaderboard row. A trial with a score is COMPLETE with the value of its best
epoch (the leaderboard's value), per-epoch scores as intermediate values, and the leaderboard's
status ("stopped early at epoch 2") as a user attribute; a trial that errored is FAIL. With
``stopped_trials = "pruned"``, a trial the scheduler stopped early is PRUNED (its per-epoch
scores as intermediate values, the last as its value, as Optuna records a pruned trial), as the
searcher told it, so optuna-dashboard's "Include PRUNED trials" applies.

A multi-objective run (``objectives`` set) becomes a study with one direction per objective: a
trial's values are the metric at its best epoch and each objective at that epoch, as in the
leaderboard. A trial lacking a value, and a diverged one (its accuracy of 0 would sit on the
Pareto front beside the smallest model), is FAIL. Importance is scored for each objective apart.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.leaderboard import best_epoch, objective_value, objectives_of
from analysis.records import RunDir, TrialStatus, read_trials, write_text
from search.config.spaces import load_space

__all__ = [
    "IMPORTANCE_COLUMNS",
    "LiveStudy",
    "export_study",
    "frozen_trials",
    "parameter_importance",
    "study_directions",
    "write_importance",
]

IMPORTANCE_COLUMNS = ("parameter", "importance", "trials_with_parameter", "reason")
# fANOVA fits at most this many scored trials, a seeded sample when there are more: its forest
# costs about 10 s per 1,000 trials here and grows faster than the trials, and a sample of 1,000
# of 4,000 moved no importance by more than 0.001 (measured on a two-parameter table).
FANOVA_TRIALS = 1000


def frozen_trials(run_dir: Path) -> tuple[list[Any], dict[str, Any]]:
    """Each recorded trial as an ``optuna.trial.FrozenTrial``, and the run's settings.

    Raises ValueError naming the trial when the space file no longer replays its values.
    """
    replay = _Replay(Path(run_dir))
    return [replay.frozen(record) for record in read_trials(run_dir)], replay.settings


class _Replay:
    """Turns a run's trial records into Optuna trials by replaying them through its space file."""

    def __init__(self, run_dir: Path):
        import optuna

        self.run_dir = run_dir
        recorded = RunDir(run_dir).settings()
        self.settings = recorded.as_record()
        self.metric, self.mode = self.settings["metric"], self.settings["mode"]
        self.objectives = list(objectives_of(self.settings))
        # Optuna prunes no multi-objective trial: there, stopped trials stay COMPLETE.
        self.prune_stopped = recorded.stopped_trials == "pruned" and not self.objectives
        self.space = load_space(run_dir / "space.py")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study()

    def frozen(self, record) -> Any:
        from optuna.trial import TrialState, create_trial

        self.study.enqueue_trial(record.params, skip_if_exists=False)
        asked = self.study.ask()
        try:
            self.space.space(asked)
            problem = ""
        except Exception as error:  # e.g. a recorded value outside an edited range or choice list
            problem = f"{type(error).__name__}: {error}"
        self.study.tell(asked, state=TrialState.FAIL)
        changed = {n: (record.params.get(n), v) for n, v in asked.params.items() if record.params.get(n) != v}
        if problem or changed:
            raise ValueError(
                f"trial {record.trial_id}: {self.run_dir / 'space.py'} does not replay the recorded values "
                f"{record.params} ({problem or f'recorded, replayed: {changed}'}); was space.py edited after the run?"
            )
        metric = self.metric
        params = {name: record.params[name] for name in asked.params}
        scores = {m["epoch"]: m[metric] for m in record.metrics if m.get(metric) is not None and "epoch" in m}
        values = _values(record, metric, self.mode, self.objectives) if scores else None
        state = TrialState.COMPLETE if values else TrialState.FAIL
        if values and self.prune_stopped and TrialStatus.of(record.status.get("status", "")) is TrialStatus.STOPPED:
            # As the searcher told it (stopped_trials "pruned"); Optuna's value of a PRUNED trial is its last.
            state, values = TrialState.PRUNED, [scores[max(scores)]]
        return create_trial(
            state=state,
            values=values,
            params=params,
            distributions={name: asked.distributions[name] for name in params},
            intermediate_values=scores,
            user_attrs={
                "trial_id": record.trial_id,
                "status": record.status.get("status", ""),
                "error": record.status.get("error", ""),
                "epochs": len(record.metrics),
                # The space's constants, e.g. lr_schedule: not searched, but part of the config.
                "constants": {k: v for k, v in record.params.items() if k not in params},
            },
            system_attrs={},
        )


class LiveStudy:
    """The run's Optuna study in ``sqlite:///RUN_DIR/study.db``, one trial added as each trial ends,
    so that ``optuna-dashboard`` shows a search while it runs.

    The same study (name, directions, trials as ``frozen_trials`` makes them) that ``export_study``
    writes at the end; the export replaces it whole, so a trial is never in it twice.
    """

    def __init__(self, run_dir: Path):
        import optuna

        run_dir = Path(run_dir).resolve()
        self._replay = _Replay(run_dir)
        self.storage = f"sqlite:///{run_dir / 'study.db'}"
        self.name = self._replay.settings.get("name") or run_dir.name
        self.study = optuna.create_study(
            study_name=self.name,
            storage=self.storage,
            directions=study_directions(self._replay.settings),
            load_if_exists=True,
        )
        if not self.study.user_attrs:
            _describe(self.study, self._replay.settings, run_dir)
        self._added = {t.user_attrs.get("trial_id") for t in self.study.get_trials(deepcopy=False)}

    def add(self, record) -> bool:
        """Add one ended trial's record; False when it is in the study already."""
        if record.trial_id in self._added:
            return False
        self.study.add_trial(self._replay.frozen(record))
        self._added.add(record.trial_id)
        return True


def _describe(study, settings: dict, run_dir: Path) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(_objective_names(settings))
    study.set_user_attr("run_dir", str(run_dir))


def _values(record, metric: str, mode: str, objectives: list[str]) -> list[float] | None:
    """The metric at the best epoch, then each objective as the leaderboard shows it; None when one
    is missing, and for a diverged trial of a multi-objective run."""

    best = best_epoch(record, metric, mode)
    if not objectives:
        return [best[metric]]
    if TrialStatus.of(record.status.get("status", "")) is TrialStatus.DIVERGED:
        return None
    values = [best[metric]]
    for name in objectives:
        value = objective_value(record, best, name)
        if value is None or not math.isfinite(value):
            return None
        values.append(value)
    return values


def study_directions(settings: dict) -> list[str]:
    """Optuna directions of a run's study: the metric's, then each objective's."""

    modes = [settings["mode"], *objectives_of(settings).values()]
    return ["maximize" if mode == "max" else "minimize" for mode in modes]


def export_study(run_dir: Path, storage: str | None = None) -> tuple[str, str]:
    """Write the run's trials as an Optuna study; return (storage URL, study name).

    Default storage: ``sqlite:///RUN_DIR/study.db``, where the engine's ``LiveStudy`` added each
    trial as it ended: that study is completed in place (the same study, no trial twice), or written
    again when it differs from the records. A study of the same name in another storage is deleted
    and written again.
    """
    import optuna

    run_dir = Path(run_dir).resolve()
    trials, settings = frozen_trials(run_dir)
    name = settings.get("name") or run_dir.name
    if storage is None:
        storage = f"sqlite:///{run_dir / 'study.db'}"
        if _complete_live_study(storage, name, trials):
            return storage, name
        (run_dir / "study.db").unlink(missing_ok=True)
    else:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass  # nothing to replace
    study = optuna.create_study(study_name=name, storage=storage, directions=study_directions(settings))
    _describe(study, settings, run_dir)
    study.add_trials(trials)
    return storage, name


def _complete_live_study(storage: str, name: str, trials: list) -> bool:
    """Bring the live study (``LiveStudy``) up to date in place, keeping its id for a dashboard that
    watches it: True when every trial it holds is one of ``trials`` as recorded now (the missing ones
    are added); False when it is missing or differs (the caller writes it again)."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # no such study, no such file, another Optuna schema: write it again
        return False
    wanted = {t.user_attrs["trial_id"]: t for t in trials}
    held = study.get_trials(deepcopy=False)
    for trial in held:
        expected = wanted.get(trial.user_attrs.get("trial_id"))
        if expected is None or (trial.state, trial.values, trial.params, trial.user_attrs) != (
            expected.state, expected.values, expected.params, expected.user_attrs
        ):
            optuna.delete_study(study_name=name, storage=storage)
            return False
    present = {t.user_attrs.get("trial_id") for t in held}
    study.add_trials([t for t in trials if t.user_attrs["trial_id"] not in present])
    return True


def _objective_names(settings: dict) -> list[str]:
    return [settings["metric"], *objectives_of(settings)]


def parameter_importance(run_dir: Path, seed: int = 0, objective: str | None = None, most: int = FANOVA_TRIALS) -> pd.DataFrame:
    """fANOVA importance of every searched parameter for the run's metric; one row per parameter.

    ``objective`` names another objective of a multi-objective run (e.g. "params") to score
    importance for it instead.

    fANOVA (Optuna's ``FanovaImportanceEvaluator``, seeded) fits a random forest to the scored
    trials' best values and splits its variance among parameters. It needs a value for every
    parameter in every trial, so it scores the parameters present in all scored trials; their
    importances sum to 1. A conditional parameter (``momentum`` only for sgd and rmsprop) is still
    listed, with importance NaN and the reason, and so is any parameter that could not be scored.

    The forest is fitted to at most ``most`` scored trials: beyond that, a sample drawn with
    ``seed``. The table's ``attrs`` say how many it was fitted to (``fitted``), of how many scored.
    """
    import random

    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    trials, settings = frozen_trials(run_dir)
    names = _objective_names(settings)
    objective = objective or settings["metric"]
    if objective not in names:
        raise ValueError(f"`objective` is {objective!r}, but this run's objectives are {names}")
    index = names.index(objective)
    scored = [t for t in trials if t.state == TrialState.COMPLETE]
    every = sorted({name for t in trials for name in t.params})
    counts = {name: sum(name in t.params for t in scored) for name in every}
    common = [name for name in every if scored and counts[name] == len(scored)]
    varied = [n for n in common if len({repr(t.params[n]) for t in scored}) > 1]
    importances: dict[str, float] = {}
    reasons: dict[str, str] = {}
    why = ""
    if len(scored) < 2 or not varied:
        why = f"{len(scored)} scored trial(s): fANOVA needs at least 2 with a varied parameter"
    elif len({t.values[index] for t in scored}) == 1:
        why = f"all {len(scored)} scored trials have the same {objective}: no variance to attribute"
    else:
        study = optuna.create_study(directions=study_directions(settings))
        fitted = scored if len(scored) <= most else random.Random(seed).sample(scored, most)
        study.add_trials(fitted)
        try:
            importances = optuna.importance.get_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(seed=seed),
                params=varied,
                target=lambda trial: trial.values[index],  # required for a multi-objective study
            )
        except RuntimeError as error:  # e.g. the forest finds no variance to split
            why = f"fANOVA failed: {error}"
    if why:
        reasons = {name: why for name in every}
    else:
        for name in every:
            if name in importances:
                continue
            if counts[name] < len(scored):
                reasons[name] = (
                    f"conditional: set in {counts[name]} of {len(scored)} scored trials; "
                    "fANOVA scores parameters every trial has"
                )
            else:
                reasons[name] = "the same value in every scored trial"
                importances[name] = 0.0
    rows = [
        {
            "parameter": name,
            "importance": importances.get(name, math.nan),
            "trials_with_parameter": counts[name],
            "reason": reasons.get(name, ""),
        }
        for name in every
    ]
    table = pd.DataFrame(rows, columns=list(IMPORTANCE_COLUMNS))
    table = table.sort_values(["importance", "parameter"], ascending=[False, True], na_position="last").reset_index(drop=True)
    table.attrs["fitted"], table.attrs["scored"] = (0 if why else len(fitted)), len(scored)
    return table


def write_importance(run_dir: Path, objective: str | None = None) -> tuple[pd.DataFrame, Path]:
    """``importance.csv`` for the run's metric, or ``importance_<objective>.csv`` for another objective."""
    table = parameter_importance(run_dir, objective=objective)
    path = Path(run_dir) / ("importance.csv" if objective is None else f"importance_{objective}.csv")
    write_text(path, table.to_csv(index=False))
    return table, path

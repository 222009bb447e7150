"""The only module that touches private attributes of Ray Tune or Optuna.

Each function below reaches one private attribute for which the installed releases (Ray 2.60,
Optuna 5.0) offer no public API; tests/search/test_adapter.py pins what each returns, so an
upgrade that moves one fails there, not in the middle of a search.

- Ray's ``Tuner.restore`` takes no ``run_config``: the callbacks pickled with the experiment
  state (the interrupted driver's recorder) can only be replaced on the tuner's internal config.
- After a restored ``fit()``, the searcher Ray unpickled is reachable only through the tuner's
  internal ``TuneConfig``.
- Ray's ``OptunaSearch`` keeps its Optuna study, the Optuna trial of each Ray trial, and the set
  of trials it has already told Optuna about in private attributes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["completed_trial_ids", "optuna_study", "optuna_trial", "replace_callbacks", "restored_search_alg"]


def replace_callbacks(tuner: Any, callbacks: list) -> None:
    """Make a restored ``tune.Tuner`` call ``callbacks`` instead of the ones pickled with it."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def restored_search_alg(tuner: Any) -> Any:
    """The search algorithm a ``tune.Tuner`` runs (after ``fit()`` on a restored tuner: with the
    searcher state Ray loaded from the experiment)."""
    return tuner._local_tuner._tune_config.search_alg


def optuna_study(searcher: Any) -> Any:
    """The ``optuna.Study`` behind Ray's ``OptunaSearch``; None before its space is set."""
    return getattr(searcher, "_ot_study", None)


def optuna_trial(searcher: Any, trial_id: str) -> Any:
    """The ``optuna.Trial`` that ``OptunaSearch`` asked for the Ray trial ``trial_id``."""
    return searcher._ot_trials[trial_id]


def completed_trial_ids(searcher: Any) -> set[str]:
    """Ray trial ids whose result ``OptunaSearch`` has already told Optuna (a live set: add to it)."""
    return searcher._completed_trials

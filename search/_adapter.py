"""The only module that touches private attributes of Ray Tune or Optuna.

Each function below reaches one private attribute for which the installed releases (Ray 2.60,
Optuna 5.0) offer no public API; tests/search/test_adapter.py pins what each returns, so an
upgrade that moves one fails there, not in the middle of a search.

- Ray's ``Tuner.restore`` takes no ``run_config``: the callbacks and the stopper pickled with the
  experiment state (the interrupted driver's recorder) can only be replaced on the tuner's
  internal config.
- After a restored ``fit()``, the searcher Ray unpickled is reachable only through the tuner's
  internal ``TuneConfig``.
- Ray's ``OptunaSearch`` keeps its Optuna study, the Optuna trial of each Ray trial, and the set
  of trials it has already told Optuna about in private attributes.
- ``ray.init`` replaces a loopback node address (``_node_ip_address="127.0.0.1"``, or an address
  ``127.0.0.1:PORT`` to join) by the machine's external one, unless Ray runs in its single-machine
  mode (its default on macOS and Windows): ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read into
  ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` when Ray is imported. ``single_machine_mode``
  sets both for the duration of a block (the variable for the processes Ray starts then).
- Setting ``RAY_AUTH_MODE=token`` after Ray is imported leaves this process's cached config at
  "disabled" (its own GCS then refuses the driver); Ray's own default for a new local session
  goes through ``authentication_token_setup._enable_token_auth``, which ``enable_token_auth`` calls.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from ray._private import ray_constants
from ray._private.authentication import authentication_token_setup

__all__ = [
    "completed_trial_ids",
    "enable_token_auth",
    "optuna_study",
    "optuna_trial",
    "replace_callbacks",
    "replace_stopper",
    "restored_search_alg",
    "single_machine_mode",
]

SINGLE_MACHINE_ENV = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR  # "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def replace_callbacks(tuner: Any, callbacks: list) -> None:
    """Make a restored ``tune.Tuner`` call ``callbacks`` instead of the ones pickled with it."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def replace_stopper(tuner: Any, stopper: Any) -> None:
    """Make a restored ``tune.Tuner`` ask ``stopper`` instead of the one pickled with it."""
    tuner._local_tuner.get_run_config().stop = stopper


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


@contextlib.contextmanager
def single_machine_mode() -> Iterator[None]:
    """Ray's single-machine mode (a loopback node IP stays loopback) inside the block only."""
    saved_env, saved_flag = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


def enable_token_auth() -> None:
    """Token authentication on for this process (its cached Ray config) and the processes it starts."""
    authentication_token_setup._enable_token_auth()

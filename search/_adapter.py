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
  of trials it has already told Optuna about in private attributes; asking again for a Ray trial
  (a repeated configuration) means dropping the Optuna trial it holds.
- ``ray.init`` replaces a loopback node address (``_node_ip_address="127.0.0.1"``, or an address
  ``127.0.0.1:PORT`` to join) by the machine's external one, unless Ray runs in its single-machine
  mode (its default on macOS and Windows): ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read into
  ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` when Ray is imported. ``single_machine_mode``
  sets both for the duration of a block (the variable for the processes Ray starts then).
- Setting ``RAY_AUTH_MODE=token`` after Ray is imported leaves this process's cached config at
  "disabled" (its own GCS then refuses the driver); Ray's own default for a new local session
  goes through ``authentication_token_setup._enable_token_auth``, which ``enable_token_auth`` calls.
- Ray Train 2.60's ``TorchTrainer`` always adds a ``PlacementGroupCleanerCallback``: a detached
  actor that asks Ray's state API, every second, whether the Train controller still lives, and
  removes the run's placement group once it does not. The state API finds its cluster through
  ``RAY_ADDRESS`` or the address file of the last ``ray start`` (``/tmp/ray/ray_current_cluster``),
  not through the caller's connection. A session started by ``ray.init`` has neither: the
  cleaner's first query fails and it checks nothing. A file left by an earlier ``ray start``
  names a cluster long gone, whose GCS each query then waits on for 40 s, and the callback's
  stop, at the end of every Train run, waits out its 12 s timeout for that query (measured). Were
  the file to name another live cluster on the machine, the cleaner would, by its code (not run
  here), find no such controller there and remove a live trial's placement group. The default callbacks
  are built in the private ``_create_default_callbacks``; ``without_placement_group_cleaner``
  leaves the cleaner out, for a session the state API would not reach
  (``state_api_reaches_this_session``, through Ray's private address lookup).
- Ray Tune snapshots the whole experiment (every trial's state, the pickled searcher with its
  study) at a period it sets itself when ``TUNE_GLOBAL_CHECKPOINT_S`` is ``auto``: the last
  snapshot's seconds x 19, but never under 10 s. A fixed 1 s period made the snapshot cost grow
  with the trial count into most of the driver's time (55% of its samples at 4,600 trials of a
  10,000-trial search, which had slowed from 15 to 4 trials/s). ``snapshot_period`` keeps Ray's
  rule with a floor of its own, through the private ``_update_auto_checkpoint_time``.
- Ray Tune's cache of trial actors for reuse (``reuse_actors``) keeps a finished trial's actor
  only for a trial already waiting for one, and at most one besides. A search whose trial slots
  free one at a time, behind a ``ConcurrencyLimiter``, has no such waiting trial, so Tune stopped
  most finished trials' actors and started a new worker process for the next trial; and a trial
  whose own new actor was still starting took the one cached actor and cancelled its own, so the
  oldest starts never finished. Measured on 8 slots of 3 x 50 ms trials: 3-5 live trial actors,
  a new worker process every 15 trials. ``trial_actor_pool`` keeps the actors the cluster has room
  for (a start waits for its own actor at most 10 s, then Ray's rule applies), through the
  controller's private ``_actor_cache`` (an ``_ObjectCache`` subclass that fills its private
  lists), ``_maybe_reuse_cached_actor``, ``_trial_to_actor``, ``_started_actors`` and
  ``_resetting_trials``.
- Ray Tune looks the trainable up in its registry, a round trip to the GCS's key-value store
  each time, three times for every trial it creates (Trial's validation, then its resources:
  ``_Registry.contains`` twice and ``_Registry.get`` once). On 6,000 short trials those lookups
  took 7.7% of the driver's samples. ``trainable_lookups_kept`` answers them from the driver's
  memory after the first, through the private registry class's ``contains`` and ``get``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any, Iterator

from ray._private import ray_constants
from ray._private.authentication import authentication_token_setup

__all__ = [
    "completed_trial_ids",
    "enable_token_auth",
    "forget_optuna_trial",
    "optuna_study",
    "optuna_trial",
    "replace_callbacks",
    "replace_stopper",
    "restored_search_alg",
    "single_machine_mode",
    "snapshot_period",
    "state_api_reaches_this_session",
    "trainable_lookups_kept",
    "trial_actor_pool",
    "without_placement_group_cleaner",
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


@contextlib.contextmanager
def snapshot_period(floor_s: float, share: float) -> Iterator[None]:
    """Inside the block, Ray Tune's automatic period between experiment snapshots
    (``TUNE_GLOBAL_CHECKPOINT_S=auto``) is ``max(floor_s, s x (1 - share) / share)``, ``s`` the
    seconds the last snapshot took: snapshots then take about ``share`` of the driver's time, and
    come every ``floor_s`` while they are cheap. A fixed period (a number in the variable) stays."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    rays_rule = _ExperimentCheckpointManager._update_auto_checkpoint_time

    def update(manager, time_taken: float) -> None:
        if manager.auto_checkpoint_enabled:
            manager._checkpoint_period = max(floor_s, time_taken * (1 - share) / share)

    _ExperimentCheckpointManager._update_auto_checkpoint_time = update
    try:
        yield
    finally:
        _ExperimentCheckpointManager._update_auto_checkpoint_time = rays_rule


@contextlib.contextmanager
def trial_actor_pool(capacity: int, wait_s: float = 10.0) -> Iterator[None]:
    """Inside the block, a Ray Tune controller with ``reuse_actors`` keeps a finished trial's actor
    for the next trial while its trial actors, live and cached, number at most ``capacity`` (the
    trial actors the cluster has room for at once); and a trial whose own new actor is starting
    waits for it, within that capacity and for at most ``wait_s``, rather than take a cached one
    and cancel its own. Beyond the capacity (more trials asked to run at once than fit), or once a
    start has waited ``wait_s`` (a node lost: its trials' new actors may never be placed while
    cached actors hold the other nodes' slots), Ray's own rules apply."""
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.utils.object_cache import _ObjectCache

    class Pool(_ObjectCache):
        def __init__(self, controller: Any):
            super().__init__(may_keep_one=True)
            self.controller = controller

        def spare(self) -> int:
            return capacity - len(self.controller._trial_to_actor) - self.num_cached_objects

        def cache_object(self, key: Any, obj: Any) -> bool:
            if super().cache_object(key, obj):
                return True
            if self.spare() < 0:  # the finished trial's actor still counts among the trials'
                return False
            self._cached_objects[key].append(obj)
            self._num_cached_objects += 1
            return True

        def flush_cached_objects(self, force_all: bool = False) -> Iterator[Any]:
            if force_all or self.spare() < 0:
                yield from super().flush_cached_objects(force_all=force_all)

    rays_init, rays_reuse = TuneController.__init__, TuneController._maybe_reuse_cached_actor
    waiting_since: dict[Any, float] = {}  # a starting actor -> when its trial first let a cached one go

    def init(controller, *args, **kwargs) -> None:
        rays_init(controller, *args, **kwargs)
        controller._actor_cache = Pool(controller)

    def reuse(controller, trial) -> bool:
        for started in [actor for actor in waiting_since if actor in controller._started_actors]:
            del waiting_since[started]
        own = controller._trial_to_actor.get(trial)
        starting = own is not None and own not in controller._started_actors
        if starting and trial not in controller._resetting_trials and controller._actor_cache.spare() >= 0:
            if time.monotonic() - waiting_since.setdefault(own, time.monotonic()) < wait_s:
                return False
        waiting_since.pop(own, None)
        return rays_reuse(controller, trial)

    TuneController.__init__, TuneController._maybe_reuse_cached_actor = init, reuse
    try:
        yield
    finally:
        TuneController.__init__, TuneController._maybe_reuse_cached_actor = rays_init, rays_reuse


@contextlib.contextmanager
def trainable_lookups_kept() -> Iterator[None]:
    """Inside the block, Ray Tune's registry answers a lookup of a trainable it has found once
    (``contains``: registered; ``get``: the class it got the first time) without asking the GCS. Every
    other category, and a trainable not found, go to the GCS as before. The engine registers its
    trainable before ``fit()``; one registered again inside the block would not be seen."""
    from ray.tune.registry import TRAINABLE_CLASS, _Registry

    rays_contains, rays_get = _Registry.contains, _Registry.get
    found: set[tuple[str, str]] = set()
    classes: dict[tuple[str, str], Any] = {}

    def contains(registry, category, key) -> bool:
        if category != TRAINABLE_CLASS:
            return rays_contains(registry, category, key)
        if (registry.prefix, key) not in found and rays_contains(registry, category, key):
            found.add((registry.prefix, key))
        return (registry.prefix, key) in found

    def get(registry, category, key) -> Any:
        if category != TRAINABLE_CLASS:
            return rays_get(registry, category, key)
        if (registry.prefix, key) not in classes:
            classes[(registry.prefix, key)] = rays_get(registry, category, key)
        return classes[(registry.prefix, key)]

    _Registry.contains, _Registry.get = contains, get
    try:
        yield
    finally:
        _Registry.contains, _Registry.get = rays_contains, rays_get


def enable_token_auth() -> None:
    """Token authentication on for this process (its cached Ray config) and the processes it starts."""
    authentication_token_setup._enable_token_auth()


def forget_optuna_trial(searcher: Any, trial_id: str) -> None:
    """Make ``OptunaSearch`` ask Optuna a new trial at the next ``suggest(trial_id)`` (the one it
    holds for ``trial_id`` is told already: a repeated configuration, see search/config/proposals.py)."""
    del searcher._ot_trials[trial_id]


def state_api_reaches_this_session() -> bool:
    """Whether Ray's state API, called from this process, would query the session this process is
    connected to: the cluster its address lookup finds is this one, and its GCS names the
    dashboard that serves the API."""
    import ray
    from ray._private import services
    from ray.experimental import internal_kv

    try:
        found = services.canonicalize_bootstrap_address(None)  # what the state API's client resolves
    except (ValueError, ConnectionError):  # an unparsable RAY_ADDRESS
        return False
    if found is None or found != ray.get_runtime_context().gcs_address:
        return False
    return internal_kv._internal_kv_get(ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD) is not None


@functools.cache
def without_placement_group_cleaner(trainer_class: type) -> type:
    """A subclass of the Ray Train trainer ``trainer_class`` that starts no
    ``PlacementGroupCleanerCallback`` (its other default callbacks as Ray builds them); one per
    trainer class, however many trials ask."""
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class Trainer(trainer_class):
        def _create_default_callbacks(self) -> list:
            callbacks = super()._create_default_callbacks()
            return [c for c in callbacks if not isinstance(c, PlacementGroupCleanerCallback)]

    Trainer.__name__ = Trainer.__qualname__ = f"{trainer_class.__name__}WithoutPlacementGroupCleaner"
    return Trainer

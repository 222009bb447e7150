"""Pins what search/_adapter.py reads from Ray's and Optuna's private attributes in the installed
releases: if an upgrade moves one, these fail before a search does. Only the state API's lookup
needs a Ray session (the suite's own, on 127.0.0.1)."""

import os
import time

import optuna
import pytest
from optuna.trial import TrialState
from ray import tune

from search import _adapter
from search.config.settings import Settings
from search.config.spaces import load_space
from search.strategies.searcher import build_searcher
from tests.conftest import REPO


def _optuna_search(settings: Settings):
    return build_searcher(load_space(REPO / "spaces" / "multi_objective.py"), settings, concurrency=2).searcher


def test_the_study_trials_and_told_set_of_rays_optuna_search():
    searcher = _optuna_search(Settings(trials=8, seed=3))
    study = _adapter.optuna_study(searcher)
    assert isinstance(study, optuna.Study) and isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.study_name == "search" and study.trials == []
    searcher.suggest("first")
    trial = _adapter.optuna_trial(searcher, "first")
    assert isinstance(trial, optuna.Trial) and trial.number == 0 and study.trials[0].state == TrialState.RUNNING
    told = _adapter.completed_trial_ids(searcher)
    assert "first" not in told
    searcher.on_trial_complete("first", result={"val_acc": 0.5})
    assert "first" in _adapter.completed_trial_ids(searcher) and study.trials[0].value == 0.5
    with pytest.raises(KeyError):
        _adapter.optuna_trial(searcher, "never-suggested")


def test_a_forgotten_optuna_trial_is_asked_anew_at_the_next_suggestion():
    searcher = _optuna_search(Settings(trials=8, seed=3))
    searcher.suggest("first")
    study = _adapter.optuna_study(searcher)
    study.tell(_adapter.optuna_trial(searcher, "first"), state=TrialState.FAIL)
    _adapter.forget_optuna_trial(searcher, "first")
    with pytest.raises(KeyError):
        _adapter.optuna_trial(searcher, "first")
    searcher.suggest("first")
    assert _adapter.optuna_trial(searcher, "first").number == 1 and len(study.trials) == 2


def test_an_optuna_search_before_its_space_is_set_has_no_study():
    assert _adapter.optuna_study(tune.search.optuna.OptunaSearch()) is None


def test_a_tuners_callbacks_and_search_algorithm(tmp_path):
    search_alg = tune.search.BasicVariantGenerator()
    first, second = tune.Callback(), tune.Callback()
    tuner = tune.Tuner(
        lambda config: None,
        tune_config=tune.TuneConfig(search_alg=search_alg),
        run_config=tune.RunConfig(name="pin", storage_path=str(tmp_path), callbacks=[first]),
    )
    assert _adapter.restored_search_alg(tuner) is search_alg
    _adapter.replace_callbacks(tuner, [second])
    assert tuner._local_tuner._get_tune_run_arguments(tuner._local_tuner.converted_trainable)["callbacks"] == [second]


def test_a_tuners_stopper_is_replaced(tmp_path):
    first, second = tune.stopper.MaximumIterationStopper(1), tune.stopper.MaximumIterationStopper(2)
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="pin", storage_path=str(tmp_path), stop=first))
    _adapter.replace_stopper(tuner, second)
    assert tuner._local_tuner._get_tune_run_arguments(tuner._local_tuner.converted_trainable)["stop"] is second


def test_single_machine_mode_keeps_a_loopback_node_ip_and_is_undone_after():
    import os

    from ray._private import ray_constants, services

    assert _adapter.SINGLE_MACHINE_ENV == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before = (os.environ.get(_adapter.SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER)
    with _adapter.single_machine_mode():
        # What ray.init does with _node_ip_address="127.0.0.1", and with an address on 127.0.0.1.
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
        assert services.resolve_ip_for_localhost("localhost") == "127.0.0.1"
        assert os.environ[_adapter.SINGLE_MACHINE_ENV] == "0"  # the processes Ray starts inherit it
    assert (os.environ.get(_adapter.SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER) == before


def test_token_auth_is_switched_on_for_this_process_and_its_children():
    import os

    saved = os.environ.get("RAY_AUTH_MODE")
    try:
        _adapter.enable_token_auth()
        assert os.environ["RAY_AUTH_MODE"] == "token"
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _callback_kinds(trainer_class) -> list[type]:
    from ray.train import ScalingConfig

    def train(config):
        pass

    return [type(c) for c in trainer_class(train, scaling_config=ScalingConfig(num_workers=2))._create_default_callbacks()]


def test_a_torch_trainer_without_the_placement_group_cleaner_keeps_every_other_default_callback():
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    default = _callback_kinds(TorchTrainer)
    assert PlacementGroupCleanerCallback in default  # what Ray adds, and the subclass leaves out
    trainer_class = _adapter.without_placement_group_cleaner(TorchTrainer)
    assert issubclass(trainer_class, TorchTrainer)
    assert _callback_kinds(trainer_class) == [kind for kind in default if kind is not PlacementGroupCleanerCallback]


def test_the_state_api_reaches_a_session_that_ray_init_started_only_through_ray_address(ray_session, monkeypatch):
    import os

    address = ray_session.get_runtime_context().gcs_address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # ray.init's session writes no address file: the lookup finds none, or an earlier `ray start`'s.
    current = "/tmp/ray/ray_current_cluster"
    assert not os.path.exists(current) or open(current).read().strip() != address
    assert not _adapter.state_api_reaches_this_session()
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert _adapter.state_api_reaches_this_session()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # a cluster long gone
    assert not _adapter.state_api_reaches_this_session()


def _snapshot_period(checkpoint_period: str, seconds: float) -> float:
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    manager = _ExperimentCheckpointManager(storage=None, checkpoint_period=checkpoint_period)
    manager._update_auto_checkpoint_time(seconds)
    return manager._checkpoint_period


def test_the_automatic_snapshot_period_takes_the_floor_inside_the_block_and_rays_rule_outside():
    assert _snapshot_period("auto", 0.01) == 10.0 and _snapshot_period("auto", 1.0) == pytest.approx(19.0)  # Ray's
    with _adapter.snapshot_period(1.0, 0.05):
        assert _snapshot_period("auto", 0.01) == 1.0
        assert _snapshot_period("auto", 0.2) == pytest.approx(3.8) and _snapshot_period("auto", 1.0) == pytest.approx(19.0)
        assert _snapshot_period("5", 2.0) == 5.0  # a fixed period stays as set
    assert _snapshot_period("auto", 0.01) == 10.0


def test_a_tuner_inside_the_block_snapshots_its_experiment_every_second_while_snapshots_are_cheap(ray_session, tmp_path, monkeypatch):
    """Ray's own rule would snapshot at the first step, then not for 10 s; 8 s of reports leave room
    for snapshots of up to 0.14 s each (a period of up to 2.6 s) on a loaded machine."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    seen: set[int] = set()

    class Snapshots(tune.Callback):
        def on_step_end(self, iteration, trials, **info):
            seen.update(path.stat().st_mtime_ns for path in (tmp_path / "pin").glob("experiment_state-*.json"))

    def trainable(config):
        for step in range(80):
            time.sleep(0.1)
            tune.report({"step": step})

    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(name="pin", storage_path=str(tmp_path), callbacks=[Snapshots()]))
    with _adapter.snapshot_period(1.0, 0.05):
        tuner.fit()
    assert len(seen) >= 3, seen  # about 8 in 8 s; Ray's rule gives 1


def _trial_pids(tmp_path, name: str, slots: int, trials: int) -> list[int]:
    """The worker process of each of ``trials`` short trials, ``slots`` at once behind a
    ConcurrencyLimiter (as the engine runs them), each slot a share of the session's 2 CPUs."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config):
        time.sleep(0.05)
        tune.report({"pid": os.getpid()})

    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    searcher = OptunaSearch(space=space, metric="pid", mode="max", sampler=optuna.samplers.RandomSampler(seed=0))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 2 / slots}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=slots), num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
    )
    return [result.metrics["pid"] for result in tuner.fit()]


def test_inside_the_pool_every_trial_runs_in_one_of_as_many_actors_as_there_are_slots(ray_session, tmp_path):
    """Each of the first 4 trials waits for its own actor, and every later trial takes a finished
    one's: 4 worker processes in all. Ray's own rules stop most finished trials' actors, and let a
    trial take a cached actor and cancel its own start: 2 processes ran these 48 trials (measured
    without the block), and 2-4 the trials of a 600-trial run."""
    from ray.tune.execution.tune_controller import TuneController

    rays_init, rays_reuse = TuneController.__init__, TuneController._maybe_reuse_cached_actor
    with _adapter.trial_actor_pool(4):
        pids = _trial_pids(tmp_path, "pool", slots=4, trials=48)
    assert len(pids) == 48 and len(set(pids)) == 4, sorted(set(pids))
    assert (TuneController.__init__, TuneController._maybe_reuse_cached_actor) == (rays_init, rays_reuse)


def _scaled(config):
    return {"score": config["x"] * 2}


def test_inside_the_block_a_trainable_is_fetched_from_the_gcs_once_and_outside_every_time(ray_session, monkeypatch):
    from ray.tune import registry

    tune.register_trainable("adapter_lookup_probe", _scaled)
    fetched = []
    rays_kv_get = registry._internal_kv_get

    def counted(key, *args, **kwargs):
        fetched.append(key)
        return rays_kv_get(key, *args, **kwargs)

    monkeypatch.setattr(registry, "_internal_kv_get", counted)
    outside = [registry.get_trainable_cls("adapter_lookup_probe") for _ in range(3)]
    assert len(fetched) == 6  # Ray's own: contains and get, each a round trip to the GCS, at every lookup
    fetched.clear()
    with _adapter.trainable_lookups_kept():
        inside = [registry.get_trainable_cls("adapter_lookup_probe") for _ in range(3)]
        assert len(fetched) == 2 and all(c is outside[0] for c in inside)
        with pytest.raises(tune.TuneError, match="Unknown trainable"):
            registry.get_trainable_cls("adapter_lookup_never_registered")
        assert len(fetched) > 2  # a trainable not found is asked again
    fetched.clear()
    registry.get_trainable_cls("adapter_lookup_probe")
    assert len(fetched) == 2  # undone after the block

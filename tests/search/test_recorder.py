import builtins

from ray import cloudpickle

from search.config.settings import Settings
from search.recorder import RunRecorder


def test_the_recorder_pickles_after_ray_replaces_builtins_print(tmp_path, monkeypatch):
    """Ray's driver replaces builtins.print (tqdm_ray.instance) once a worker's log is shown; the
    Tuner then pickles a recorder whose ``out`` is the original print: it must still pickle."""
    original = builtins.print
    recorder = RunRecorder(tmp_path, Settings(), original)

    def replaced(*args, **kwargs):
        original(*args, **kwargs)

    monkeypatch.setattr(builtins, "print", replaced)
    copy = cloudpickle.loads(cloudpickle.dumps(recorder))
    assert copy.out is None and copy.run_dir == tmp_path and copy.stopper.reason is None
    assert recorder.out is original  # the live recorder keeps its output


def test_a_trial_that_fails_before_its_start_is_recorded_whole_and_the_live_study_goes_on(tmp_path, ray_session):
    """Ray can end a trial with an error before its start callback (its worker killed, or a reused
    actor's reset failing). Its record must still hold its config: without it the leaderboard does
    not list the failure, and the live study, finding no record, was disabled for the whole search."""
    import optuna
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from analysis.records import RunDir, write_json

    settings = Settings()
    write_json(tmp_path / "settings.json", settings.as_record())
    (tmp_path / "space.py").write_text('def space(trial):\n    return {"lr": trial.suggest_float("lr", 1e-4, 0.1, log=True)}\n')
    lines: list[str] = []
    recorder = RunRecorder(tmp_path, settings, lines.append)
    trial = Trial("trainable", config={"lr": 0.01}, stub=True,
                  storage=StorageContext(storage_path=str(tmp_path / "ray"), experiment_dir_name="exp"))  # fmt: skip
    trial.init_local_path()
    trial.handle_error(RuntimeError("the trial's worker died before it started"))
    recorder.on_trial_error(0, [trial], trial)
    recorder.on_experiment_end([trial])

    [record] = RunDir(tmp_path).trials()
    assert record.trial_id == trial.trial_id and record.params == {"lr": 0.01}
    assert record.status["status"] == "error" and "worker died before it started" in record.status["error"]
    assert not [line for line in lines if "live Optuna study disabled" in line]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    [name] = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert [(t.user_attrs["trial_id"], t.state) for t in study.trials] == [(trial.trial_id, optuna.trial.TrialState.FAIL)]

import builtins

import pytest
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


def _failed_before_start(tmp_path, lines, n=1):
    """A recorder of a run in ``tmp_path`` and ``n`` real Ray trials that ended with an error
    before their start callback, each handed to it as Ray's controller would."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from analysis.records import write_json

    settings = Settings()
    write_json(tmp_path / "settings.json", settings.as_record())
    (tmp_path / "space.py").write_text('def space(trial):\n    return {"lr": trial.suggest_float("lr", 1e-4, 0.1, log=True)}\n')
    recorder = RunRecorder(tmp_path, settings, lines.append)
    trials = []
    for lr in [0.01 * (k + 1) for k in range(n)]:
        trial = Trial("trainable", config={"lr": lr}, stub=True,
                      storage=StorageContext(storage_path=str(tmp_path / "ray"), experiment_dir_name="exp"))  # fmt: skip
        trial.init_local_path()
        trial.handle_error(RuntimeError("the trial's worker died before it started"))
        trials.append(trial)
    return recorder, trials


def _live_trials(run_dir) -> list:
    import optuna

    storage = f"sqlite:///{run_dir / 'study.db'}"
    if not (run_dir / "study.db").exists():
        return []
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).trials


def test_a_trial_that_fails_before_its_start_is_recorded_whole_and_the_live_study_goes_on(tmp_path, ray_session):
    """Ray can end a trial with an error before its start callback (its worker killed, or a reused
    actor's reset failing). Its record must still hold its config: without it the leaderboard does
    not list the failure, and the live study, finding no record, was disabled for the whole search."""
    import optuna

    from analysis.records import RunDir

    lines: list[str] = []
    recorder, [trial] = _failed_before_start(tmp_path, lines)
    recorder.on_trial_error(0, [trial], trial)
    recorder.on_experiment_end([trial])

    [record] = RunDir(tmp_path).trials()
    assert record.trial_id == trial.trial_id and record.params == {"lr": 0.01}
    assert record.status["status"] == "error" and "worker died before it started" in record.status["error"]
    assert not [line for line in lines if "live Optuna study disabled" in line]
    trials = _live_trials(tmp_path)
    assert [(t.user_attrs["trial_id"], t.state) for t in trials] == [(trial.trial_id, optuna.trial.TrialState.FAIL)]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_the_live_study_gets_ended_trials_within_its_share_of_the_drivers_time_and_the_rest_at_the_end(
    tmp_path, ray_session, monkeypatch, share
):
    """With no share, ended trials wait for the search's end; with the whole driver's time, each
    goes in as it ends. Either way the study holds every trial once when the search is over."""
    monkeypatch.setattr("search.recorder.LIVE_STUDY_SHARE", share)
    recorder, trials = _failed_before_start(tmp_path, [], n=3)
    seen = []
    for trial in trials:
        recorder.on_trial_error(0, trials, trial)
        recorder.on_step_end(0, trials)
        seen.append(len(_live_trials(tmp_path)))
    assert seen == ([0, 0, 0] if share == 0.0 else [1, 2, 3])
    recorder.on_experiment_end(trials)
    assert sorted(t.user_attrs["trial_id"] for t in _live_trials(tmp_path)) == sorted(t.trial_id for t in trials)

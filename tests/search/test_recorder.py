import builtins
import random

import pytest
from ray import cloudpickle
from ray.tune.experiment import Trial

from analysis.leaderboard import best_epoch
from analysis.records import RunDir
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


@pytest.mark.parametrize("metric,mode", [("val_acc", "max"), ("val_loss", "min")])
def test_a_trial_summary_is_the_one_its_record_gives(tmp_path, metric, mode):
    """The recorder keeps a fresh trial's scores in memory for its summary (best score, epochs);
    they must give what the trial's record on disk gives: ties to the earliest epoch, epochs
    without the metric counted, and an epoch reported twice (after a restore) read from the record."""
    recorder = RunRecorder(tmp_path, Settings(metric=metric, mode=mode), lambda line: None)
    rng = random.Random(0)
    reports = {
        "ties": [{"epoch": e, metric: v} for e, v in enumerate([0.5, 0.7, 0.7, 0.2, 0.5], 1)],
        "a gap": [{"epoch": 1, metric: 0.3}, {"epoch": 2}, {"epoch": 3, metric: 0.1}],
        "no metric": [{"epoch": 1}, {"epoch": 2}],
        "a repeated epoch": [{"epoch": 1, metric: 0.9}, {"epoch": 2, metric: 0.4}, {"epoch": 2, metric: 0.6}],
        "random": [{"epoch": e, metric: rng.choice([0.1, 0.2, 0.3])} for e in range(1, 30)],
    }
    for name, results in reports.items():
        trial = Trial("trainable", config={"max_epochs": 3}, stub=True)
        recorder.on_trial_start(0, [trial], trial)
        for result in results:
            trial.update_last_result(result)
            recorder.on_trial_result(0, [trial], trial, trial.last_result)
        from_memory = trial.trial_id in recorder.scores
        assert from_memory == (name != "a repeated epoch")
        summary = recorder._best_of(trial)
        record = RunDir(tmp_path).trial(trial.trial_id)
        best = best_epoch(record, metric, mode)
        expected = {f"best_{metric}": best[metric], "epochs": float(len(record.metrics))} if best else {}
        assert summary == expected, name
        assert trial.trial_id not in recorder.scores

"""Any reported metric as the objective, on the shared real Ray session: a trainable of its own
reporting ``val_f1`` searched with ``--metric val_f1 --mode max`` (and ``min``), and a metric the
trainable never reports stopping the search at its first report."""

from __future__ import annotations

import json
import time

import optuna
import pytest

from analysis.records import read_trials
from search.cli import main

pytestmark = pytest.mark.slow

_SPACE = '''
TRAINABLE = "tests.trivial:{function}"
DATA_FRACTION = 0.2
IMAGE_SIZE = 8


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)
'''


def _space(tmp_path, function):
    path = tmp_path / f"{function}.py"
    path.write_text(_SPACE.format(function=function))
    return str(path)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_trainables_own_metric_ranks_stops_and_samples_the_search(mode, ray_session, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main([
        "run", _space(tmp_path, "f1_score"), "--metric", "val_f1", "--mode", mode, "--trials", "8",
        "--max-epochs", "3", "--storage", str(runs), "--name", "f1", "--no-retrain",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert f"metric val_f1 ({mode})" in printed and "top 5 by val_f1:" in printed
    run_dir = runs / "f1"
    assert json.loads((run_dir / "settings.json").read_text())["mode"] == mode
    board = __import__("pandas").read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    ranked = board[board["rank"].notna()]
    assert len(ranked) == 8 and board["val_acc"].isna().all()  # ranked by val_f1 alone
    scores = ranked["val_f1"].tolist()
    assert scores == sorted(scores, reverse=mode == "max")
    # Each trial's best epoch is chosen in the mode's direction: val_f1 grows 0.01 per epoch.
    for _, row in ranked.iterrows():
        assert row["best_epoch"] == (row["epochs"] if mode == "max" else 1)
    # ASHA judged trials by val_f1 in that direction: it stopped some, never the best one.
    records = {r.trial_id: r for r in read_trials(run_dir)}
    status = {t: r.status["status"] for t, r in records.items()}
    first = {t: r.metrics[0]["val_f1"] for t, r in records.items()}
    best = (max if mode == "max" else min)(first, key=first.get)
    assert status[best] == "completed" and ranked["trial_id"].iloc[0] == best
    assert any(s.startswith("stopped early") for s in status.values()), status
    # The report's Optuna study has the same direction and winner.
    study = optuna.load_study(study_name="f1", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert study.direction == (optuna.study.StudyDirection.MAXIMIZE if mode == "max" else optuna.study.StudyDirection.MINIMIZE)
    assert study.best_trial.user_attrs["trial_id"] == best
    assert "ranked by `val_f1` (" + mode + ")" in (run_dir / "report.md").read_text()


def test_a_metric_the_trainable_does_not_report_stops_the_search_at_once(ray_session, tmp_path, capsys):
    runs = tmp_path / "runs"
    started = time.monotonic()
    code = main([
        "run", _space(tmp_path, "constant"), "--metric", "val_f1", "--mode", "max", "--trials", "8",
        "--concurrency", "2", "--storage", str(runs), "--name", "no-f1", "--no-retrain",
    ])  # fmt: skip
    seconds = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 2
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("error: the search stopped before its budget: trial ")
    assert "metric not reported: the search's metric is 'val_f1'" in error
    assert "it reported ['epoch', 'val_acc', 'val_loss']" in error and "'tests.trivial:constant'" in error
    assert "Traceback" not in captured.err
    # The search ended instead of failing all 8 trials one by one, and no trial was retried.
    records = read_trials(runs / "no-f1")
    assert 1 <= len(records) <= 2, [r.trial_id for r in records]
    for record in records:
        assert (record.status["status"], record.status["retries"]) == ("error", 0), record.status
        assert "metric not reported" in record.status["error"]
    print(f"stopped after {len(records)} trial(s) in {seconds:.1f} s")


def test_a_multi_worker_trial_without_the_metric_stops_the_search_too(ray_session, tmp_path):
    from search.config.spaces import load_space, resolve_settings
    from search.engine import MetricNotReported, run_search

    space = load_space(_space(tmp_path, "constant"))
    settings = resolve_settings(
        space,
        {"metric": "val_f1", "mode": "max", "trials": 4, "workers_per_trial": 2, "storage": str(tmp_path), "name": "workers"},
    )
    with pytest.raises(MetricNotReported, match=r"metric not reported: the search's metric is 'val_f1'.*\['epoch', 'val_acc', 'val_loss'\]"):
        run_search(space, settings, out=lambda line: None)
    (record,) = read_trials(tmp_path / "workers")  # 2 workers x 1 CPU: one trial at a time, and the first ended it
    assert (record.status["status"], record.status["retries"]) == ("error", 0), record.status

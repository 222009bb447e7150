"""The Python API (``from search import run``), MLflow tracking, the live Optuna study, progress that
scales, reproducible runs and the baseline beside the winner: real searches on the shared Ray session."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time

import pandas as pd
import pytest

from analysis.records import read_trials
from search import open_run, run
from tests.conftest import REPO
from tests.fixed_spaces import lowest_train_loss, start_with

pytestmark = pytest.mark.slow

_TRIVIAL = '''
TRAINABLE = "tests.trivial:{function}"
MAX_EPOCHS = 1
DATA_FRACTION = 0.2
IMAGE_SIZE = 8


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {constants}
'''


def _trivial_space(path, function="constant", constants=None):
    path.write_text(_TRIVIAL.format(function=function, constants=repr(constants or {})))
    return path


class _Lines(logging.Handler):
    """Collects what the API logs to the "search" logger, with the time of each line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record):
        self.lines.append((time.monotonic(), record.getMessage()))

    def __enter__(self):
        logger = logging.getLogger("search")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        logger = logging.getLogger("search")
        logger.removeHandler(self)
        logger.setLevel(self._level)


def _progress_lines(lines):
    return [(t, line) for t, line in lines if re.match(r"^\[\d+:\d\d\] \d+/\d+ finished", line)]


@pytest.fixture(scope="module")
def tracked_run(ray_session, tmp_path_factory):
    """8 trivial trials, one at a time, tracked in MLflow (sqlite), each reading the live study.

    The live study's whole share of the driver's time: by default it gets 5%, which trials of a
    third of a second cannot pay for the study's creation (0.1 to 0.45 s measured here), so they
    would go in at the end (the throttle has its own test in tests/search/test_recorder.py)."""
    root = tmp_path_factory.mktemp("api")
    storage, name = root / "runs", "tracked"
    study_db = storage / name / "study.db"
    space = _trivial_space(root / "live.py", "live_study", {"study_db": str(study_db), "study_name": name})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with _Lines() as captured, pytest.MonkeyPatch.context() as patch:
        patch.setattr("search.recorder.LIVE_STUDY_SHARE", 1.0)
        result = run(space, trials=8, concurrency=1, storage=str(storage), name=name, mlflow=uri, retrain=False)
    return result, uri, captured.lines


def test_run_returns_a_run_with_leaderboard_and_best(tracked_run):
    result, _, lines = tracked_run
    board = result.leaderboard
    assert isinstance(board, pd.DataFrame) and len(board) == 8
    assert result.best["trial_id"] == board["trial_id"].iloc[0] and result.best["val_acc"] == board["val_acc"].max()
    assert result.dir.name == "tracked" and (result.dir / "report.md").is_file()
    assert open_run(result.dir).best == result.best
    assert any(line.startswith("report: ") for _, line in lines)  # output went through logging


def test_trials_are_in_the_optuna_study_while_the_search_runs(tracked_run):
    import optuna

    result, _, _ = tracked_run
    # Each trial read the live study when it started: with one trial at a time, the trials before it.
    seen = [row["live_trials"] for row in sorted(
        (r.metrics[0] | {"started": r.status["started_at"]} for r in _records(result.dir)), key=lambda m: m["started"]
    )]  # fmt: skip
    assert seen[0] == 0 and seen[-1] >= 6 and seen == sorted(seen), seen
    # The end-of-run export kept that study: one study, the run's name, created once, one trial per row.
    storage = f"sqlite:///{result.dir / 'study.db'}"
    summaries = optuna.get_all_study_summaries(storage)
    assert [(s.study_name, s._study_id) for s in summaries] == [("tracked", 1)]
    trials = optuna.load_study(study_name="tracked", storage=storage).trials
    assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(result.leaderboard["trial_id"])


def _records(run_dir):
    return read_trials(run_dir)


def test_mlflow_has_the_search_and_one_nested_run_per_trial(tracked_run):
    import mlflow

    result, uri, _ = tracked_run
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["image-search"])
    parent = runs[runs["tags.kind"] == "search"]
    assert list(parent["tags.mlflow.runName"]) == ["tracked"] and list(parent["params.trials"]) == ["8"]
    trials = runs[runs["tags.kind"] == "trial"]
    assert len(trials) == 8 and (trials["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert set(trials["tags.trial_id"]) == set(result.leaderboard["trial_id"])
    assert (trials["tags.status"] == "completed").all() and (trials["status"] == "FINISHED").all()
    assert trials["tags.node"].str.len().min() > 0
    board = result.leaderboard.set_index("trial_id")
    for _, row in trials.iterrows():
        assert float(row["params.x"]) == pytest.approx(board.loc[row["tags.trial_id"], "x"])
        assert row["metrics.val_acc"] == pytest.approx(board.loc[row["tags.trial_id"], "val_acc"])
    history = mlflow.MlflowClient(uri).get_metric_history(trials["run_id"].iloc[0], "val_acc")
    assert [m.step for m in history] == [1]  # step = epoch


def test_bad_input_fails_before_the_search(tmp_path):
    space = _trivial_space(tmp_path / "space.py")
    with pytest.raises(TypeError, match=r"unknown option 'trails' \(did you mean 'trials'\?\)"):
        run(space, trails=3, storage=str(tmp_path))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"`mlflow` is 'http://127.0.0.1:{port}', but nothing answers there"):
        run(space, mlflow=f"http://127.0.0.1:{port}", storage=str(tmp_path / "runs"), name="never")
    assert time.monotonic() - started < 30 and not (tmp_path / "runs" / "never").exists()


def test_run_works_inside_a_running_event_loop(ray_session, tmp_path):
    """As in Jupyter, whose cells run inside an asyncio loop: no os._exit, no loop of its own."""
    space = _trivial_space(tmp_path / "space.py")

    async def cell():
        return run(space, trials=2, storage=str(tmp_path / "runs"), name="in-loop", retrain=False)

    result = asyncio.run(cell())
    assert len(result.leaderboard) == 2


def test_plain_progress_lines_stay_under_one_per_period_however_fast_trials_end(ray_session, tmp_path):
    space = _trivial_space(tmp_path / "space.py")
    with _Lines() as captured:
        started = time.monotonic()
        result = run(space, trials=150, storage=str(tmp_path / "runs"), name="fast", retrain=False, progress_every_s=2)
        seconds = time.monotonic() - started
    lines = _progress_lines(captured.lines)
    assert len(result.leaderboard) == 150
    assert lines[-1][1].startswith("[") and "150/150 finished" in lines[-1][1]  # the last one always shows
    assert 2 <= len(lines) <= seconds / 2 + 2, (len(lines), seconds)
    gaps = [b - a for (a, _), (b, _) in zip(lines, lines[1:-1])]
    assert min(gaps, default=2) >= 1.9, gaps


def _comparable(board: pd.DataFrame) -> pd.DataFrame:
    """Parameters and metrics to 4 decimals; trial ids and timings aside."""
    dropped = [c for c in board.columns if c in ("trial_id", "train_time_s") or c.endswith("_time_s")]
    return board.drop(columns=dropped).round(4).reset_index(drop=True)


@pytest.fixture(scope="module")
def repeated_runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("repeat")
    settings = dict(trials=4, max_epochs=2, grace_period_epochs=1, data_fraction=0.3, concurrency=1, seed=3, retrain=False,
                    start_with=start_with("scratch_cnn.py"))  # fmt: skip
    first = run(REPO / "spaces" / "scratch_cnn.py", storage=str(root), name="first", mlflow=f"sqlite:///{root / 'm.db'}", **settings)
    second = run(REPO / "spaces" / "scratch_cnn.py", storage=str(root), name="second", **settings)
    return first, second, f"sqlite:///{root / 'm.db'}"


def test_concurrency_1_and_the_same_seed_give_the_same_leaderboard(repeated_runs):
    first, second, _ = repeated_runs
    pd.testing.assert_frame_equal(_comparable(first.leaderboard), _comparable(second.leaderboard))
    # Two epochs on 30% of digits leave val_acc near chance for some seeds; the training loss has
    # moved: benchmarks/test_bounds.py --cases api_repeated, highest over seeds 1-5 1.83, plus 0.1.
    assert lowest_train_loss(first.dir) < 1.95


def test_retrain_shows_a_baseline_and_logs_the_winner_to_mlflow(repeated_runs, tmp_path):
    import mlflow
    from PIL import Image

    first, _, uri = repeated_runs
    table = first.retrain(seeds=1, tta=False)
    row = table.iloc[0]
    assert row["baseline"] == "logistic regression on pixels"
    assert 0.5 < row["baseline_test_acc"] <= 1.0  # digits: a linear model on pixels does well
    assert "Classic baseline, logistic regression on pixels" in first.report().read_text()
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["image-search"], filter_string="tags.kind = 'retrain'")
    assert len(runs) == 1 and runs["tags.trial_id"].iloc[0] == first.best["trial_id"]
    assert runs["metrics.test_acc_mean"].iloc[0] == pytest.approx(row["test_acc_mean"])
    artifacts = mlflow.MlflowClient(uri).list_artifacts(runs["run_id"].iloc[0], "model")
    assert {"model/model.pt", "model/model.json"} <= {a.path for a in artifacts}
    confusion = mlflow.MlflowClient(uri).list_artifacts(runs["run_id"].iloc[0], "test")
    assert any(a.path.endswith("-confusion.png") for a in confusion)
    image = tmp_path / "digit.png"
    Image.new("RGB", (16, 16), "white").save(image)
    (ranked,) = first.predict([image], top=3)
    assert len(ranked) == 3 and sum(p for _, p in ranked) <= 1.0 + 1e-6


def test_the_readme_notebook_example_runs(ray_session, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    marker = "<!-- notebook example: tests/test_api.py runs this block -->"
    assert marker in text
    code = text.split(marker, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # its runs/ and mlflow.db land here
    (tmp_path / "spaces").symlink_to(REPO / "spaces")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result, tested = namespace["result"], namespace["tested"]
    assert len(result.leaderboard) == 4 and result.best["trial_id"] == tested["trial_id"].iloc[0]
    assert tested["baseline_test_acc"].iloc[0] > 0.5 and (result.dir / "report.md").is_file()
    assert namespace["again"].dir == result.dir and (tmp_path / "mlflow.db").is_file()

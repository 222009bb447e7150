"""The Pareto front of a multi-objective leaderboard: dominance, non-dominated sorting, the columns."""

import pandas as pd
import pytest

from analysis.leaderboard import FIXED_COLUMNS, build_leaderboard, dominates, pareto_ranks
from analysis.records import append_metrics, trial_dir, write_json

MAX_MIN = ["max", "min"]  # val_acc up, params down


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0.9, 100), (0.8, 200), True),  # better in both
        ((0.9, 100), (0.9, 200), True),  # equal accuracy, smaller
        ((0.9, 100), (0.8, 100), True),  # equal size, more accurate
        ((0.9, 100), (0.9, 100), False),  # equal points: neither dominates
        ((0.9, 200), (0.8, 100), False),  # a trade-off
        ((0.8, 200), (0.9, 100), False),  # worse in both
    ],
)
def test_dominance_follows_each_objectives_direction(a, b, expected):
    assert dominates(a, b, MAX_MIN) is expected


def test_dominance_needs_one_direction_per_objective():
    with pytest.raises(ValueError):
        dominates((1.0, 2.0), (1.0, 3.0), ["max"])


def test_non_dominated_sorting_peels_fronts_and_ties_share_one():
    points = [(0.9, 1000), (0.8, 100), (0.8, 100), (0.7, 500), (0.95, 5000), (0.6, 5000), (0.85, 1000)]
    assert pareto_ranks(points, MAX_MIN) == [1, 1, 1, 2, 1, 3, 2]
    assert pareto_ranks([], MAX_MIN) == []
    assert pareto_ranks([(1.0, 1.0, 1.0)], ["min", "min", "min"]) == [1]
    # three objectives: a point better in the third alone is not dominated
    assert pareto_ranks([(0.9, 100, 5.0), (0.9, 100, 4.0)], ["max", "min", "min"]) == [2, 1]


def _trial(run_dir, trial_id, accuracies, params, status, latency=1.0):
    directory = trial_dir(run_dir, trial_id)
    write_json(directory / "config.json", {"trainable": "classifier", "config": {"lr": 0.1}, "params": {"lr": 0.1}})
    for epoch, accuracy in enumerate(accuracies, start=1):
        metrics = {"epoch": epoch, "val_acc": accuracy, "val_loss": 1 - accuracy, "train_time_s": 1.0 * epoch}
        append_metrics(directory / "metrics.jsonl", metrics | ({"params": params, "latency_ms": latency} if params else {}))
    write_json(directory / "status.json", {"status": status, "error": "", "started_at": trial_id})


@pytest.fixture
def run_dir(tmp_path):
    write_json(tmp_path / "settings.json", {"metric": "val_acc", "mode": "max", "objectives": "params"})
    _trial(tmp_path, "big", [0.8, 0.95], 5000, "completed")
    _trial(tmp_path, "small", [0.85], 100, "stopped early at epoch 1")
    _trial(tmp_path, "twin", [0.85], 100, "stopped early at epoch 1")  # ties "small": same front
    _trial(tmp_path, "mid", [0.7, 0.8], 1000, "completed")  # dominated by small
    _trial(tmp_path, "tiny", [0.0], 10, "diverged at epoch 1")  # would be on the front: excluded
    _trial(tmp_path, "none", [], None, "error")
    return tmp_path


def test_the_leaderboard_marks_the_front_and_still_ranks_by_the_metric(run_dir):
    table = build_leaderboard(run_dir)
    assert table["trial_id"].tolist()[:4] == ["big", "small", "twin", "mid"]
    columns = list(table.columns)
    assert columns[columns.index("val_loss") + 1 : columns.index("val_loss") + 4] == ["params", "pareto", "pareto_rank"]
    rows = table.set_index("trial_id")
    assert rows["pareto"].to_dict() == {"big": True, "small": True, "twin": True, "mid": False, "tiny": False, "none": False}
    assert rows.loc["mid", "pareto_rank"] == 2
    assert pd.isna(rows.loc["tiny", "pareto_rank"]) and pd.isna(rows.loc["none", "pareto_rank"])
    assert rows.loc["big", "params"] == 5000 and rows.loc["big", "val_acc"] == 0.95
    assert table["pareto"].dtype == bool


def test_latency_can_be_a_further_objective(run_dir):
    write_json(run_dir / "settings.json", {"metric": "val_acc", "mode": "max", "objectives": "params,latency_ms"})
    _trial(run_dir, "slow", [0.99], 100, "completed", latency=9.0)
    rows = build_leaderboard(run_dir).set_index("trial_id")
    assert rows.loc["slow", "latency_ms"] == 9.0 and rows.loc["slow", "pareto"]
    assert rows.loc["small", "pareto"]  # faster than "slow", though less accurate
    assert rows.loc["big", "pareto"]  # "slow" is more accurate and smaller, but slower
    _trial(run_dir, "fast", [0.99], 100, "completed", latency=0.5)
    rows = build_leaderboard(run_dir).set_index("trial_id")
    assert rows.loc["fast", "pareto"] and rows[rows["pareto"]].index.tolist() == ["fast"]


def test_a_single_objective_run_has_no_pareto_columns(run_dir):
    write_json(run_dir / "settings.json", {"metric": "val_acc", "mode": "max"})
    table = build_leaderboard(run_dir)
    assert list(table.columns) == list(FIXED_COLUMNS) + ["lr"]

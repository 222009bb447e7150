"""A real multi-objective search: spaces/multi_objective.py (val_acc against params) on a shared
Ray session, then the report. Checks the Pareto front end to end, from Optuna's study to the plot."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from analysis.leaderboard import build_leaderboard, dominates
from analysis.records import read_trials
from search.config.spaces import load_space, resolve_settings
from search.engine import read_settings, run_search
from search.tuner import warm_started_storage
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SEARCHED = {"conv_blocks", "base_width", "dropout", "lr", "batch_size"}


@pytest.fixture(scope="module")
def pareto_run(ray_session, tmp_path_factory):
    from analysis.report import write_report

    space = load_space(REPO / "spaces" / "multi_objective.py")
    settings = resolve_settings(
        space,
        {"storage": str(tmp_path_factory.mktemp("runs")), "name": "pareto", "seed": 0, "trials": 4,
         "max_epochs": 2, "grace_period_epochs": 1, "data_fraction": 0.25, "image_size": 16},
    )  # fmt: skip
    lines: list[str] = []
    run_dir = run_search(space, settings, out=lines.append)
    write_report(run_dir)
    return run_dir, "\n".join(lines)


def test_every_epoch_reports_its_costs(pareto_run):
    for record in read_trials(pareto_run[0]):
        assert record.metrics
        for metrics in record.metrics:
            assert isinstance(metrics["params"], int) and metrics["params"] > 1000
            assert metrics["latency_ms"] > 0
        # measured once per trial, repeated in later reports
        assert len({m["latency_ms"] for m in record.metrics}) == 1


def test_leaderboard_has_objectives_pareto_and_parameters(pareto_run):
    run_dir, output = pareto_run
    table = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(table) == 4
    assert {"params", "pareto", "pareto_rank"} | SEARCHED <= set(table.columns)
    assert "latency_ms" not in table.columns  # not an objective of this run
    assert table["val_acc"].iloc[0] == table["val_acc"].max()  # still ranked by the metric
    front = table[table["pareto"]]
    assert len(front) >= 1 and (front["pareto_rank"] == 1).all()
    # The front is exactly the set of trials no other trial dominates.
    points = {row.trial_id: (row.val_acc, row.params) for row in table.itertuples()}
    for trial_id, point in points.items():
        beaten = any(dominates(other, point, ["max", "min"]) for key, other in points.items() if key != trial_id)
        assert (trial_id in set(front["trial_id"])) == (not beaten)
    # The extremes are always on it: the best accuracy (fewest parameters among ties), the smallest model.
    assert table.sort_values(["val_acc", "params"], ascending=[False, True])["pareto"].iloc[0]
    assert table.sort_values(["params", "val_acc"], ascending=[True, False])["pareto"].iloc[0]
    assert build_leaderboard(run_dir).to_csv(index=False) == (run_dir / "leaderboard.csv").read_text()
    assert "Pareto front of val_acc against params" in output


def test_searcher_and_exported_study_have_two_directions(pareto_run):
    from ray.tune.search.optuna import OptunaSearch

    run_dir, _ = pareto_run
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(run_dir / "ray"))
    assert searcher._ot_study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    told = [t for t in searcher._ot_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert told and all(len(t.values) == 2 for t in told)

    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert len(study.directions) == 2 and study.metric_names == ["val_acc", "params"]
    table = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    for row in table.itertuples():
        assert by_id[row.trial_id].values == [row.val_acc, row.params]
    on_front = {t.user_attrs["trial_id"] for t in study.best_trials}
    assert on_front == set(table.loc[table["pareto"], "trial_id"])


def test_report_plots_the_front_and_scores_importance_per_objective(pareto_run):
    run_dir, _ = pareto_run
    assert (run_dir / "plots" / "pareto.png").stat().st_size > 10_000
    report = (run_dir / "report.md").read_text()
    assert "![pareto front](plots/pareto.png)" in report and "## Pareto front" in report
    params_importance = pd.read_csv(run_dir / "importance_params.csv")
    assert set(params_importance["parameter"]) == SEARCHED
    assert (run_dir / "importance.csv").is_file()


def test_extension_warm_start_keeps_every_objective(pareto_run):
    run_dir, _ = pareto_run
    storage = warm_started_storage(run_dir, read_settings(run_dir))
    study = optuna.load_study(study_name="search", storage=storage)
    assert len(study.directions) == 2
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 4 and complete
    assert all(len(t.values) == 2 and not any(math.isnan(v) for v in t.values) for t in complete)

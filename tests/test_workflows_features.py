"""The frozen-features workflow end to end: spaces/features.py searched on the shared Ray session,
ranked on the leaderboard, retrained and tested once, compared with an ensemble, and predicted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.records import read_trials
from search.config.spaces import load_space, resolve_settings
from search.engine import run_search
from tests.conftest import REPO, write_png_folder

pytestmark = pytest.mark.slow

# benchmarks/test_bounds.py, "features": the lowest over seeds 1-5 (best val_acc 0.78, the retrained
# winner's test_acc 0.72), less a margin (chance is 0.1).
BEST_VAL_ACC = 0.65
RETRAINED_TEST_ACC = 0.6


@pytest.fixture(scope="module")
def features_run(ray_session, tmp_path_factory):
    space = load_space(REPO / "spaces" / "features.py")
    overrides = {
        "storage": str(tmp_path_factory.mktemp("runs")),
        "name": "features",
        "model": "tf_efficientnet_lite0",  # what MODEL "auto" resolves to offline, without the 3 s hub probe
        "weights": "offline",
        "trials": 3,
        "data_fraction": 0.25,
        "seed": 3,
    }
    lines: list[str] = []
    run_dir = run_search(space, resolve_settings(space, overrides), out=lines.append)
    return run_dir, "\n".join(lines)


def test_features_trials_rank_on_the_leaderboard_with_their_classifier_parameters(features_run):
    run_dir, output = features_run
    board = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(board) == 3 and (board["status"] == "completed").all(), board[["status", "error"]]
    assert {"classifier", "standardize"} <= set(board.columns)
    for classifier in board["classifier"]:
        assert classifier in ("logistic_regression", "random_forest", "svm")
    # Conditional: only random-forest trials have it (no column at all when none drew the forest).
    n_estimators = board["n_estimators"] if "n_estimators" in board else pd.Series(np.nan, index=board.index)
    assert n_estimators.notna().tolist() == (board["classifier"] == "random_forest").tolist()
    assert (board["best_epoch"] == 1).all() and (board["epochs"] == 1).all()
    assert board["val_acc"].iloc[0] == board["val_acc"].max() > BEST_VAL_ACC
    assert "top 5 by val_acc" in output
    records = read_trials(run_dir)
    reports = [r.metrics[0] for r in records]
    for key in ("val_balanced_acc", "feature_time_s", "fit_time_s", "feature_dim"):
        assert all(key in report for report in reports), key
    # The features were extracted once and loaded by the other trials (the cache is on disk, so
    # it serves trials in other worker processes).
    assert min(report["feature_time_s"] for report in reports) < 1.0, [r["feature_time_s"] for r in reports]


def test_retrain_tests_features_models_and_compares_an_ensemble(features_run, capsys):
    from search.cli import main

    run_dir, _ = features_run
    assert main(["retrain", str(run_dir), "--top-k", "2", "--seeds", "1", "--ensemble"]) == 0
    printed = capsys.readouterr().out
    results = pd.read_csv(run_dir / "test_results.csv", dtype={"trial_id": str})
    assert len(results) == 2 and (results["seeds"] == 1).all()
    assert results["test_acc_mean"].iloc[0] > RETRAINED_TEST_ACC
    assert results["test_acc_tta_mean"].notna().all()  # flip TTA, side by side
    assert "flip TTA" in printed and "ensemble vs. single best" in printed
    for trial_id in results["trial_id"]:
        directory = run_dir / "retrain" / f"{trial_id}-seed3"
        names = {p.name for p in directory.iterdir()}
        assert {"metrics.json", "model.json", "per_class.csv", "confusion.csv", "confusion.png"} <= names
        assert "model.pt" not in names  # nothing to pickle: predict refits
        assert json.loads((directory / "model.json").read_text())["trainable"] == "features"
    ensemble = pd.read_csv(run_dir / "ensemble.csv")
    assert ensemble["model"].tolist() == ["single best", "ensemble of top 2 (first seed each)"]
    assert ensemble["n_models"].tolist() == [1, 2]
    best = results.iloc[0]
    assert ensemble["test_acc"].iloc[0] == pytest.approx(best["test_acc_mean"])
    assert ensemble["test_loss"].iloc[0] == pytest.approx(best["test_loss_mean"])
    scores = ensemble[["test_acc", "test_balanced_acc", "test_acc_tta"]].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()

    # Without TTA the stored models are reused, and the TTA columns are empty.
    assert main(["retrain", str(run_dir), "--top-k", "2", "--seeds", "1", "--no-tta"]) == 0
    assert "2 model(s) (2 reused" in capsys.readouterr().out
    plain = pd.read_csv(run_dir / "test_results.csv", dtype={"trial_id": str})
    assert plain["test_acc_tta_mean"].isna().all()
    pd.testing.assert_series_equal(plain["test_acc_mean"], results["test_acc_mean"])

    # The report copes with one-epoch trials and shows the test results.
    assert main(["report", str(run_dir)]) == 0
    assert f"executing {run_dir.resolve() / 'space.py'}" in capsys.readouterr().out  # said before it runs
    assert "Test set" in (run_dir / "report.md").read_text()


def test_predict_refits_the_features_winner(features_run, tmp_path):
    from analysis.final_data import load_final_data
    from analysis.predict import predict
    from analysis.retrain import retrain

    run_dir, _ = features_run
    retrain(run_dir, top_k=1, seeds=1, out=[].append)  # reuses the previous test's model, or fits it
    data = load_final_data(run_dir)
    chosen = np.arange(6)  # the first train + validation images: the retrain stored their probabilities
    folder = write_png_folder(tmp_path, data.train_images[chosen], data.train_labels[chosen], list(data.classes))
    files = sorted(folder.rglob("*.png"), key=lambda p: int(p.stem))
    ranked = predict(run_dir, files, top=10)
    winner = pd.read_csv(run_dir / "test_results.csv", dtype={"trial_id": str})["trial_id"].iloc[0]
    stored = json.loads((run_dir / "retrain" / f"{winner}-seed3" / "model.json").read_text())["fit_check"]
    for ranks, expected in zip(ranked, stored):
        by_class = dict(ranks)
        assert [by_class[name] for name in data.classes] == pytest.approx(expected, abs=1e-4)

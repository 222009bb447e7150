"""Analysis of a real run: a search on a shared Ray session, then report, retrain, predict.

The data set is an ImageFolder of noisy red, green and blue squares written as PNG files, so the
winner separates the classes for sure and ``predict`` can be checked on real training files.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest

from analysis.leaderboard import build_leaderboard
from analysis.records import read_json
from analysis.rerun import load_trial_data
from search.config.spaces import load_space, resolve_settings
from search.engine import run_search
from tests.conftest import REPO, write_png_folder

pytestmark = pytest.mark.slow

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}
SEARCHED = {"conv_blocks", "base_width", "dropout", "batch_size", "lr", "optimizer", "weight_decay"}


@pytest.fixture(scope="module")
def colour_run(ray_session, tmp_path_factory):
    rng = np.random.default_rng(0)
    classes = sorted(COLOURS)
    labels = np.repeat(np.arange(len(classes)), 300)
    base = np.array([COLOURS[classes[label]] for label in labels], dtype=np.float64)[:, :, None, None]
    images = np.clip(base + rng.normal(0, 30, (len(labels), 3, 16, 16)), 0, 255).astype(np.uint8)
    folder = write_png_folder(tmp_path_factory.mktemp("colours"), images, labels, classes)
    space = load_space(REPO / "spaces" / "scratch_cnn.py")
    storage = tmp_path_factory.mktemp("runs")
    settings = resolve_settings(
        space,
        {"storage": str(storage), "name": "colours", "seed": 0, "dataset": str(folder), "trials": 4,
         "max_epochs": 4, "grace_period_epochs": 1, "reduction_factor": 3},
    )  # fmt: skip
    return run_search(space, settings, out=lambda line: None), folder


@pytest.fixture(scope="module")
def retrained(colour_run):
    from analysis.retrain import retrain

    lines: list[str] = []
    table = retrain(colour_run[0], top_k=2, seeds=2, out=lines.append)
    return table, lines


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_leaderboard_rebuilt_from_files_equals_the_written_one(colour_run):
    run_dir, _ = colour_run
    assert build_leaderboard(run_dir).to_csv(index=False) == (run_dir / "leaderboard.csv").read_text()


def test_report_importance_and_the_exported_study(colour_run):
    from analysis.report import write_report

    run_dir, _ = colour_run
    report = write_report(run_dir).read_text()
    for name in ("learning_curves", "parameters", "importance"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 5000 and f"plots/{name}.png" in report
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert str(board["trial_id"].iloc[0]) in report

    importance = pd.read_csv(run_dir / "importance.csv")
    searched = SEARCHED | ({"momentum"} if board["optimizer"].isin(["sgd", "rmsprop"]).any() else set())
    assert set(importance["parameter"]) == searched  # every searched parameter, constants (lr_schedule) not
    scored = importance["importance"].dropna()
    assert scored.sum() == pytest.approx(1.0) and scored.between(0, 1).all()
    assert importance.loc[importance["importance"].isna(), "reason"].str.len().gt(0).all()

    study = optuna.load_study(study_name="colours", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert len(study.trials) == len(board)
    rows = board.set_index("trial_id")
    for trial in study.trials:
        row = rows.loc[trial.user_attrs["trial_id"]]
        assert trial.value == pytest.approx(row["val_acc"]) and trial.user_attrs["status"] == row["status"]
        assert {name: row[name] for name in trial.params} == pytest.approx(trial.params)  # strings compare equal


def test_retrain_tests_k_times_s_models_on_images_no_trial_saw(colour_run, retrained):
    from analysis.final_data import load_final_data

    run_dir, _ = colour_run
    table, lines = retrained
    assert len(table) == 2 and (table["seeds"] == 2).all()
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert table["trial_id"].tolist() == board["trial_id"].head(2).tolist()
    assert table["best_epoch"].tolist() == board["best_epoch"].head(2).tolist()
    models = pd.read_csv(run_dir / "retrain" / "models.csv", dtype={"trial_id": str})
    assert len(models) == 4 and models["test_acc"].between(0, 1).all()
    assert table["test_acc_mean"].iloc[0] > 0.9  # noisy colours: the winner separates them
    split = read_json(run_dir / "split.json")
    for _, model in models.iterrows():
        directory = run_dir / "retrain" / f"{model['trial_id']}-seed{model['seed']}"
        confusion = pd.read_csv(directory / "confusion.csv", index_col=0).to_numpy()
        assert confusion.sum() == len(split["test"]) == model["test_examples"]
        assert read_json(directory / "model.json")["train_examples"] == len(split["train"]) + len(split["val"])
        assert len(pd.read_csv(directory / "per_class.csv")) == 3

    # No test image is among the images any trial trained or validated on, or retrain trained on.
    final, trial = load_final_data(run_dir), load_trial_data(run_dir)
    test = {_digest(image) for image in final.test_images}
    assert len(test) == len(split["test"])
    for seen in (trial.train_images, trial.val_images, final.train_images):
        assert test.isdisjoint(_digest(image) for image in seen)
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    assert set(final.train_indices.tolist()) == set(split["train"]) | set(split["val"])


def test_a_second_retrain_reuses_the_stored_models(colour_run, retrained):
    from analysis.retrain import retrain

    run_dir, _ = colour_run
    weights = sorted((run_dir / "retrain").glob("*/model.pt"))
    stamps = [path.stat().st_mtime_ns for path in weights]
    lines: list[str] = []
    again = retrain(run_dir, top_k=2, seeds=2, out=lines.append)
    assert "4 model(s) (4 reused" in lines[-1] and not any("read now" in line for line in lines)
    assert [path.stat().st_mtime_ns for path in weights] == stamps
    pd.testing.assert_frame_equal(again, retrained[0])


def test_tensorboard_shows_the_retrained_models_test_metrics(colour_run, retrained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = colour_run
    for directory in sorted(p for p in (run_dir / "retrain").glob("*-seed*") if p.is_dir()):
        events = EventAccumulator(str(directory))
        events.Reload()
        assert events.Scalars("test_acc")[-1].value == pytest.approx(read_json(directory / "metrics.json")["test_acc"])
        assert events.PluginTagToContent("hparams")


def test_predict_names_the_class_of_training_images(colour_run, retrained):
    from analysis.predict import predict

    run_dir, folder = colour_run
    split = read_json(run_dir / "split.json")
    files = sorted(p for p in folder.rglob("*.png"))  # the ImageFolder's order: by class, then name
    chosen = {}
    for index in split["train"]:
        chosen.setdefault(files[index].parent.name, files[index])
    assert sorted(chosen) == sorted(COLOURS)
    ranked = predict(run_dir, list(chosen.values()))
    for (colour, _), top in zip(chosen.items(), ranked):
        assert len(top) == 3 and top[0][0] == colour, top  # three classes: all of them, best first
        assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_cli_predict_and_report_errors(colour_run, retrained, tmp_path):
    run_dir, folder = colour_run
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    image = next(folder.rglob("*.png"))
    done = subprocess.run(
        [sys.executable, "-m", "search", "predict", str(run_dir), str(image), str(broken)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and f"error: cannot read image {str(broken)!r}" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "search", "predict", str(run_dir), str(image)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith(f"{image}: {image.parent.name} ")

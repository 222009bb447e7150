import pandas as pd
import pytest

from analysis.leaderboard import build_leaderboard, format_table, write_leaderboard
from analysis.records import append_metrics, read_trials, trial_dir, write_json


def _trial(run_dir, trial_id, started, params, accuracies, status):
    directory = trial_dir(run_dir, trial_id)
    write_json(directory / "config.json", {"trainable": "classifier", "config": params, "params": params})
    for epoch, accuracy in enumerate(accuracies, start=1):
        append_metrics(directory / "metrics.jsonl", {"epoch": epoch, "val_acc": accuracy, "val_loss": 1 - accuracy, "train_time_s": 2.0 * epoch})
    write_json(directory / "status.json", {"status": status, "error": "boom" if status == "error" else "", "started_at": started})


@pytest.fixture
def run_dir(tmp_path):
    write_json(tmp_path / "settings.json", {"metric": "val_acc", "mode": "max", "max_epochs": 3})
    _trial(tmp_path, "a", "1", {"lr": 0.1, "optimizer": "sgd"}, [0.5, 0.7, 0.8], "completed")
    _trial(tmp_path, "b", "2", {"lr": 0.01, "optimizer": "adam"}, [0.6, 0.9, 0.85], "completed")
    _trial(tmp_path, "c", "3", {"lr": 0.5, "optimizer": "sgd"}, [0.3], "stopped early at epoch 1")
    _trial(tmp_path, "d", "4", {"lr": 1.0, "optimizer": "sgd", "status": "x"}, [], "error")
    _trial(tmp_path, "e", "5", {"lr": 0.02, "optimizer": "adam"}, [0.6, 0.9], "stopped early at epoch 2")
    return tmp_path


def test_ranks_by_the_best_epoch_and_breaks_ties_by_fewer_epochs(run_dir):
    table = build_leaderboard(run_dir)
    assert table["trial_id"].tolist() == ["e", "b", "a", "c", "d"]
    assert table["rank"].tolist()[:4] == [1, 2, 3, 4] and pd.isna(table["rank"].iloc[4])
    best = table.set_index("trial_id")
    assert best.loc["b", "val_acc"] == 0.9 and best.loc["b", "best_epoch"] == 2 and best.loc["b", "epochs"] == 3
    assert best.loc["d", "status"] == "error" and best.loc["d", "error"] == "boom"


def test_every_parameter_is_a_column_and_clashes_are_prefixed(run_dir):
    table = build_leaderboard(run_dir)
    assert {"lr", "optimizer", "param_status"} <= set(table.columns)
    assert table.set_index("trial_id").loc["d", "param_status"] == "x"


def test_sort_and_status_filter(run_dir):
    by_loss = build_leaderboard(run_dir, sort_by="val_loss")
    assert by_loss["trial_id"].tolist()[:2] == ["e", "b"]
    stopped = build_leaderboard(run_dir, status="stopped")
    assert stopped["trial_id"].tolist() == ["e", "c"]
    with pytest.raises(ValueError, match="cannot sort by 'accuracy'"):
        build_leaderboard(run_dir, sort_by="accuracy")


def test_min_mode_ranks_low_first(run_dir):
    write_json(run_dir / "settings.json", {"metric": "val_loss", "mode": "min", "max_epochs": 3})
    assert build_leaderboard(run_dir)["trial_id"].tolist()[:3] == ["e", "b", "a"]


def test_written_csv_round_trips(run_dir):
    table, path = write_leaderboard(run_dir)
    again = pd.read_csv(path)
    assert again["trial_id"].tolist() == table["trial_id"].tolist()
    assert "trial_id" in format_table(table, rows=2)


def test_a_torn_metrics_line_is_ignored(run_dir):
    with open(trial_dir(run_dir, "a") / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 4, "val_a')
    assert len(next(r for r in read_trials(run_dir) if r.trial_id == "a").metrics) == 3


def test_unfinished_budget_counts_trials_that_have_not_ended(run_dir):
    from analysis.records import unfinished_budget

    settings = {"metric": "val_acc", "mode": "max", "max_epochs": 3}
    write_json(run_dir / "settings.json", settings | {"trials": 5})
    assert unfinished_budget(run_dir) == 0  # completed, stopped early and error trials have ended
    write_json(run_dir / "settings.json", settings | {"trials": 7})
    _trial(run_dir, "f", "6", {"lr": 0.3, "optimizer": "sgd"}, [0.4], "running")
    assert unfinished_budget(run_dir) == 2  # one still running, one never started


def test_equal_accuracy_at_the_same_epoch_ranks_by_validation_loss_not_by_time(tmp_path):
    """A search repeated with the same seed gives the same table: three trials tied on val_acc at
    epoch 1 (common on a small validation set) rank by their loss, whatever their training times."""
    write_json(tmp_path / "settings.json", {"metric": "val_acc", "mode": "max", "max_epochs": 2})
    for trial_id, loss, seconds in (("slow-low-loss", 2.3, 9.0), ("fast-high-loss", 19.7, 0.1), ("mid", 4.0, 1.0)):
        directory = trial_dir(tmp_path, trial_id)
        write_json(directory / "config.json", {"trainable": "classifier", "config": {}, "params": {}})
        append_metrics(directory / "metrics.jsonl", {"epoch": 1, "val_acc": 0.1, "val_loss": loss, "train_time_s": seconds})
        write_json(directory / "status.json", {"status": "stopped early at epoch 1", "error": "", "started_at": "1"})
    assert build_leaderboard(tmp_path)["trial_id"].tolist() == ["slow-low-loss", "mid", "fast-high-loss"]

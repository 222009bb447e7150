import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from analysis.records import append_metrics, read_trial, trial_dir, write_json
from analysis.study import LiveStudy, export_study, frozen_trials, parameter_importance

SPACE = '''
def space(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
    if optimizer == "sgd":
        trial.suggest_float("momentum", 0.0, 0.95)
    trial.suggest_categorical("batch_size", [32, 64])
    return {"lr_schedule": "cosine"}
'''


def _trial(run_dir, trial_id, params, accuracies, status):
    params = params | {"lr_schedule": "cosine"}
    directory = trial_dir(run_dir, trial_id)
    write_json(directory / "config.json", {"trainable": "classifier", "config": params, "params": params})
    for epoch, accuracy in enumerate(accuracies, start=1):
        append_metrics(directory / "metrics.jsonl", {"epoch": epoch, "val_acc": accuracy, "val_loss": 1 - accuracy})
    write_json(directory / "status.json", {"status": status, "error": "boom" if status == "error" else "", "started_at": trial_id})


@pytest.fixture
def run_dir(tmp_path):
    write_json(tmp_path / "settings.json", {"metric": "val_acc", "mode": "max", "name": "demo"})
    (tmp_path / "space.py").write_text(SPACE)
    _trial(tmp_path, "a", {"lr": 0.01, "optimizer": "adam", "batch_size": 32}, [0.6, 0.9], "completed")
    _trial(tmp_path, "b", {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "batch_size": 32}, [0.5, 0.7], "completed")
    _trial(tmp_path, "c", {"lr": 0.0002, "optimizer": "adam", "batch_size": 32}, [0.2], "stopped early at epoch 1")
    _trial(tmp_path, "d", {"lr": 0.09, "optimizer": "sgd", "momentum": 0.1, "batch_size": 32}, [0.3], "stopped early at epoch 1")
    _trial(tmp_path, "e", {"lr": 0.001, "optimizer": "adam", "batch_size": 32}, [], "error")
    return tmp_path


def test_replaying_the_space_recovers_distributions_and_states(run_dir):
    trials, _ = frozen_trials(run_dir)
    by_id = {t.user_attrs["trial_id"]: t for t in trials}
    assert by_id["b"].distributions["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert by_id["b"].distributions["momentum"] == FloatDistribution(0.0, 0.95)
    assert by_id["b"].distributions["optimizer"] == CategoricalDistribution(["sgd", "adam"])
    assert "momentum" not in by_id["a"].params  # conditional: adam has none
    assert by_id["a"].value == 0.9 and by_id["a"].intermediate_values == {1: 0.6, 2: 0.9}
    assert by_id["c"].user_attrs["status"] == "stopped early at epoch 1"
    assert by_id["e"].state == TrialState.FAIL and by_id["a"].state == TrialState.COMPLETE
    assert by_id["a"].user_attrs["constants"] == {"lr_schedule": "cosine"}  # returned, not searched


def test_an_edited_space_file_is_named_in_the_error(run_dir):
    (run_dir / "space.py").write_text(SPACE.replace('["sgd", "adam"]', '["sgd", "adamw"]'))
    with pytest.raises(ValueError, match=r"trial a: .*space.py does not replay the recorded values"):
        frozen_trials(run_dir)


def test_exported_study_loads_with_one_trial_per_row_and_replaces_itself(run_dir, tmp_path_factory):
    url, name = export_study(run_dir)
    assert url == f"sqlite:///{run_dir.resolve() / 'study.db'}" and name == "demo"
    url, name = export_study(run_dir)  # a second export replaces the first
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 5 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.best_trial.user_attrs["trial_id"] == "a" and study.best_value == 0.9
    other = f"sqlite:///{tmp_path_factory.mktemp('elsewhere') / 'optuna.db'}"
    assert export_study(run_dir, other) == (other, "demo")
    assert len(optuna.load_study(study_name="demo", storage=other).trials) == 5


def test_the_live_study_grows_as_trials_end_and_the_export_completes_it_in_place(run_dir):
    live = LiveStudy(run_dir)
    assert live.add(read_trial(run_dir, "a")) and live.add(read_trial(run_dir, "e"))
    assert not live.add(read_trial(run_dir, "a"))  # never twice
    watched = optuna.load_study(study_name="demo", storage=live.storage)  # as optuna-dashboard reads it
    assert [t.user_attrs["trial_id"] for t in watched.trials] == ["a", "e"] and watched.best_value == 0.9
    study_id = watched._study_id
    assert not LiveStudy(run_dir).add(read_trial(run_dir, "e"))  # reopened (resume): knows what it holds
    url, name = export_study(run_dir)
    (summary,) = optuna.get_all_study_summaries(url)
    assert (summary.study_name, summary._study_id, summary.n_trials) == ("demo", study_id, 5)
    exported = sorted(t.user_attrs["trial_id"] for t in optuna.load_study(study_name=name, storage=url).trials)
    assert exported == ["a", "b", "c", "d", "e"]


def test_a_live_study_that_differs_from_the_records_is_written_again(run_dir):
    live = LiveStudy(run_dir)
    live.add(read_trial(run_dir, "a"))
    append_metrics(trial_dir(run_dir, "a") / "metrics.jsonl", {"epoch": 3, "val_acc": 0.95, "val_loss": 0.05})
    url, name = export_study(run_dir)
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 5 and study.best_value == 0.95


def test_importance_names_every_parameter_and_says_why_one_is_unscored(run_dir):
    table = parameter_importance(run_dir).set_index("parameter")
    assert set(table.index) == {"lr", "optimizer", "momentum", "batch_size"}
    assert math.isnan(table.loc["momentum", "importance"]) and "conditional: set in 2 of 4" in table.loc["momentum", "reason"]
    assert table.loc["batch_size", "importance"] == 0.0 and "same value" in table.loc["batch_size", "reason"]
    scored = table["importance"].dropna()
    assert scored.sum() == pytest.approx(1.0) and (scored >= 0).all()
    assert table.loc["momentum", "trials_with_parameter"] == 2


def test_importance_beyond_its_trial_cap_is_fitted_to_a_seeded_sample_and_says_so(run_dir):
    whole = parameter_importance(run_dir)
    assert (whole.attrs["fitted"], whole.attrs["scored"]) == (4, 4)
    sample = parameter_importance(run_dir, most=3)
    assert (sample.attrs["fitted"], sample.attrs["scored"]) == (3, 4)
    assert sample["importance"].dropna().sum() == pytest.approx(1.0)
    assert sample.equals(parameter_importance(run_dir, most=3))  # the same sample each time
    assert sample.loc[sample["parameter"] == "momentum", "trials_with_parameter"].item() == 2  # counts every scored trial


def test_importance_of_trials_that_all_scored_the_same_is_unscored_with_the_reason(tmp_path):
    write_json(tmp_path / "settings.json", {"metric": "val_acc", "mode": "max", "name": "flat"})
    (tmp_path / "space.py").write_text(SPACE)
    _trial(tmp_path, "a", {"lr": 0.01, "optimizer": "adam", "batch_size": 32}, [0.1], "completed")
    _trial(tmp_path, "b", {"lr": 0.05, "optimizer": "adam", "batch_size": 64}, [0.1], "completed")
    table = parameter_importance(tmp_path)
    assert set(table["parameter"]) == {"lr", "optimizer", "batch_size"} and table["importance"].isna().all()
    assert table["reason"].str.contains("all 2 scored trials have the same val_acc").all()


def _add_costs(run_dir, costs):
    """Give each trial's every epoch a parameter count, as the classifier reports it."""
    for trial_id, params in costs.items():
        path = trial_dir(run_dir, trial_id) / "metrics.jsonl"
        lines = [json.loads(line) | {"params": params} for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_a_multi_objective_run_exports_one_direction_per_objective(run_dir):
    write_json(run_dir / "settings.json", {"metric": "val_acc", "mode": "max", "name": "demo", "objectives": "params"})
    _add_costs(run_dir, {"a": 5000, "b": 100, "c": 50, "d": 300})
    _trial(run_dir, "f", {"lr": 0.003, "optimizer": "adam", "batch_size": 64}, [0.0], "diverged at epoch 1")
    _add_costs(run_dir, {"f": 10})
    trials, _ = frozen_trials(run_dir)
    by_id = {t.user_attrs["trial_id"]: t for t in trials}
    assert by_id["a"].values == [0.9, 5000] and by_id["c"].values == [0.2, 50]
    assert by_id["f"].state == TrialState.FAIL  # diverged: kept off the front
    url, name = export_study(run_dir)
    study = optuna.load_study(study_name=name, storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"] and study.metric_names == ["val_acc", "params"]
    assert {t.user_attrs["trial_id"] for t in study.best_trials} == {"a", "b", "c"}
    for objective in (None, "params"):
        table = parameter_importance(run_dir, objective=objective)
        assert set(table["parameter"]) == {"lr", "optimizer", "momentum", "batch_size"}
    with pytest.raises(ValueError, match=r"`objective` is 'latency_ms', but this run's objectives are \['val_acc', 'params'\]"):
        parameter_importance(run_dir, objective="latency_ms")

"""Repeated configurations and how stopped trials are told (search/config/proposals.py): the rules
called directly, the engine's searcher driven in memory (real Ray class, real Optuna), and real
small searches on the shared Ray session with a tiny categorical space."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from analysis.leaderboard import build_leaderboard
from analysis.records import read_trials, unfinished_budget
from analysis.study import frozen_trials
from search import _adapter
from search.config.proposals import Ledger, configuration_key, outcome
from search.config.settings import Settings
from search.config.spaces import load_space, resolve_settings
from search.engine import run_search
from search.strategies.searcher import build_searcher as _searcher
from search.strategies.searcher import discrete_grid

# 3 x 2 = 6 configurations; x (what tests.trivial:epochs climbs to) is their rank.
_CATEGORICAL = '''
TRAINABLE = "tests.trivial:epochs"
MAX_EPOCHS = 2
DATA_FRACTION = 0.2
IMAGE_SIZE = 8


def space(trial):
    width = trial.suggest_categorical("width", [8, 16, 32])
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
    return {"x": ([8, 16, 32].index(width) * 2 + ["sgd", "adam"].index(optimizer) + 1) / 6}
'''

_CONTINUOUS = '''
TRAINABLE = "tests.trivial:epochs"
MAX_EPOCHS = 3
DATA_FRACTION = 0.2
IMAGE_SIZE = 8


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)
'''


def _space(tmp_path, text):
    path = tmp_path / "space.py"
    path.write_text(text)
    return load_space(path)


def test_a_stopped_trial_is_told_complete_or_pruned_as_set():
    stopped = {"epoch": 2, "val_acc": 0.4}
    assert outcome(stopped, False, "val_acc", "complete", 4) == ("COMPLETE", 0.4)
    assert outcome(stopped, False, "val_acc", "pruned", 4) == ("PRUNED", None)
    assert outcome(stopped | {"epoch": 4}, False, "val_acc", "pruned", 4) == ("COMPLETE", 0.4)
    assert outcome(stopped | {"diverged": True}, False, "val_acc", "pruned", 4) == ("COMPLETE", 0.4)
    # As Ray's OptunaSearch: no value is FAIL after an error, else PRUNED; a last value stands.
    assert outcome({}, True, "val_acc", "complete", 4) == ("FAIL", None)
    assert outcome({}, False, "val_acc", "complete", 4) == ("PRUNED", None)
    assert outcome(stopped, True, "val_acc", "pruned", 4) == ("COMPLETE", 0.4)
    # Several objectives: never pruned; FAIL without every value, or diverged.
    both = ["val_acc", "params"]
    assert outcome(stopped | {"params": 10}, False, both, "pruned", 4) == ("COMPLETE", [0.4, 10])
    assert outcome(stopped, False, both, "complete", 4) == ("FAIL", None)
    assert outcome(stopped | {"params": 10, "diverged": True}, False, both, "complete", 4) == ("FAIL", None)


def test_the_ledger_knows_tried_configurations_and_when_a_grid_is_exhausted():
    grid = [{"a": 1, "b": "p"}, {"a": 1, "b": "q"}, {"a": 2, "b": "p"}]
    ledger = Ledger(grid)
    assert configuration_key({"b": "p", "a": 1}) == configuration_key({"a": 1, "b": "p"})
    ledger.start("t1", {"b": "p", "a": 1})
    assert ledger.known({"a": 1, "b": "p"}).state == "RUNNING" and ledger.known({"a": 2, "b": "p"}) is None
    ledger.end("t1", {"a": 1, "b": "p"}, "COMPLETE", 0.5, {1: 0.5})
    ledger.end("t9", {"a": 1, "b": "p"}, "COMPLETE", 0.1, {})  # a later repeat does not overwrite
    assert (ledger.known({"a": 1, "b": "p"}).values, ledger.known({"a": 1, "b": "p"}).trial_id) == (0.5, "t1")
    assert ledger.untried() == {"a": 1, "b": "q"} and not ledger.exhausted()
    ledger.start("t2", {"a": 1, "b": "q"})
    ledger.start("t3", {"a": 2, "b": "p"})
    assert ledger.exhausted() and ledger.untried() is None
    assert not Ledger(None).exhausted() and Ledger(None).untried() is None


def test_a_discrete_space_is_enumerated_and_a_continuous_one_is_not(tmp_path):
    settings = Settings(seed=1)
    grid = discrete_grid(_space(tmp_path, _CATEGORICAL), settings)
    assert len(grid) == 6 and len({configuration_key(p) for p in grid}) == 6
    assert discrete_grid(_space(tmp_path, _CONTINUOUS), settings) is None


def test_the_searcher_tells_a_stopped_trial_pruned_with_its_epochs_or_complete(tmp_path):
    space = _space(tmp_path, _CONTINUOUS)
    # Optuna gives a PRUNED trial its last intermediate value as its value, as its pruners' trials.
    for told, state, value in (("pruned", TrialState.PRUNED, 0.25), ("complete", TrialState.COMPLETE, 0.25)):
        searcher = _searcher(space, Settings(trials=4, max_epochs=3, stopped_trials=told), concurrency=2).searcher
        searcher.suggest("a")
        for epoch, score in ((1, 0.1), (2, 0.25)):
            searcher.on_trial_result("a", {"training_iteration": epoch, "epoch": epoch, "val_acc": score})
        searcher.on_trial_complete("a", result={"epoch": 2, "val_acc": 0.25, "config": {}})
        searcher.suggest("b")
        searcher.on_trial_result("b", {"training_iteration": 1, "epoch": 1, "val_acc": 0.5})
        searcher.on_trial_complete("b", result={"epoch": 3, "val_acc": 0.5, "config": {}})  # ran max_epochs
        first, second = _adapter.optuna_study(searcher).trials
        assert (first.state, first.value, first.intermediate_values) == (state, value, {1: 0.1, 2: 0.25})
        assert (second.state, second.value) == (TrialState.COMPLETE, 0.5)


def test_the_searcher_asks_again_for_a_tried_configuration_and_stops_when_none_is_left(tmp_path):
    space = _space(tmp_path, _CATEGORICAL)
    searcher = _searcher(space, Settings(trials=20, seed=0), concurrency=20).searcher
    configs = []
    for k in range(6):
        configs.append(json.dumps(searcher.suggest(f"t{k}"), sort_keys=True))
        if k < 3:  # half of them end, half still run
            searcher.on_trial_complete(f"t{k}", result={"epoch": 2, "val_acc": k / 6, "config": {}})
    assert len(set(configs)) == 6
    assert searcher.suggest("t6") == "FINISHED" and "every one of the space's 6 configurations" in searcher.exhausted
    told = [t for t in _adapter.optuna_study(searcher).trials if t.user_attrs == {}]
    # Each avoided proposal was told to Optuna: the known value, or FAIL while its first trial ran.
    assert len(told) == 6 + searcher.ledger.avoided
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING) for t in told)
    assert Settings(repeats="allow").repeats == "allow"
    with pytest.raises(ValueError, match=r"`repeats` is 'avod', but must be one of \['avoid', 'allow'\].*'avoid'"):
        Settings(repeats="avod")
    with pytest.raises(ValueError, match=r"`stopped_trials` is 'prune'.*did you mean 'pruned'"):
        Settings(stopped_trials="prune")


def _search(tmp_path, text, **overrides):
    space = _space(tmp_path, text)
    settings = resolve_settings(space, {"storage": str(tmp_path / "runs"), "name": "run", "concurrency": 2} | overrides)
    lines: list[str] = []
    run_dir = run_search(space, settings, out=lines.append)
    return run_dir, build_leaderboard(run_dir), lines


@pytest.mark.slow
def test_a_search_never_trains_a_configuration_twice_and_stops_when_the_space_is_exhausted(ray_session, tmp_path):
    # 10 trials of a 6-configuration space: without avoiding repeats, 4 or more would be repeats.
    run_dir, table, lines = _search(tmp_path, _CATEGORICAL, trials=10, sampler="tpe", scheduler="fifo", seed=2)
    keys = [configuration_key({k: r.params[k] for k in ("width", "optimizer")}) for r in read_trials(run_dir)]
    assert len(keys) == 6 and len(set(keys)) == 6, keys
    assert (table["repeat_of"] == "").all() and (table["status"] == "completed").all()
    assert any("every one of the space's 6 configurations was tried" in line for line in lines), lines
    summary = next(line for line in lines if line.startswith("finished "))
    assert "finished 6 trials" in summary and " 0 repeats" in summary, summary
    # The budget is recorded as the trials run, so the run reads as finished, not interrupted.
    assert json.loads((run_dir / "settings.json").read_text())["trials"] == 6 and unfinished_budget(run_dir) == 0


@pytest.mark.slow
def test_repeats_allowed_are_trained_and_counted(ray_session, tmp_path):
    # 9 trials of 6 configurations: at least 3 are repeats, each named in repeat_of.
    run_dir, table, lines = _search(tmp_path, _CATEGORICAL, trials=9, sampler="random", repeats="allow")
    repeats = table[table["repeat_of"] != ""]
    assert len(table) == 9 and len(repeats) >= 3
    params = table.set_index("trial_id")[["width", "optimizer"]]
    for _, row in repeats.iterrows():
        assert (params.loc[row["trial_id"]] == params.loc[row["repeat_of"]]).all()
    summary = next(line for line in lines if line.startswith("finished "))
    assert f" {len(repeats)} repeats;" in summary, summary


@pytest.mark.slow
@pytest.mark.parametrize("told", ["complete", "pruned"])
def test_stopped_trials_reach_the_study_as_set(ray_session, tmp_path, told):
    run_dir, table, _ = _search(tmp_path, _CONTINUOUS, trials=8, scheduler="asha", stopped_trials=told, seed=1)
    stopped = set(table.loc[table["status"].str.startswith("stopped"), "trial_id"])
    assert stopped and len(stopped) < 8, table["status"].tolist()
    trials, _ = frozen_trials(run_dir)
    states = {t.user_attrs["trial_id"]: t.state for t in trials}
    expected = TrialState.PRUNED if told == "pruned" else TrialState.COMPLETE
    assert all(states[i] == expected for i in stopped) and all(
        s == TrialState.COMPLETE for i, s in states.items() if i not in stopped
    )
    # The live study (RUN_DIR/study.db) holds the same states.
    import optuna

    live = optuna.load_study(study_name="run", storage=f"sqlite:///{run_dir / 'study.db'}").trials
    assert {t.user_attrs["trial_id"]: t.state for t in live} == states
    assert all(t.intermediate_values for t in live if t.state == TrialState.PRUNED)

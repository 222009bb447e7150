"""The engine's pure helpers; the engine itself runs in tests/test_end_to_end.py and tests/test_cluster.py."""

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from search.config.settings import Settings
from search.engine import gpu_share, nsga2_population, trial_status_from_error


@pytest.mark.parametrize(
    "error, status",
    [
        ("trainables.classifier.TrialInfeasible: infeasible: out of memory at micro-batch 2 (batch size 64): CUDA out of memory", "infeasible: out of memory"),
        ("search.trial._RepeatedFailure: TrialInfeasible: infeasible: out of memory at micro-batch 2 (batch size 64)", "infeasible: out of memory"),
        ("trainables.classifier.TrialDiverged: training loss is nan at epoch 2, step 3", "error"),
        ("The actor died unexpectedly before finishing this task.", "error"),
    ],
)
def test_a_failed_trial_status_comes_from_its_error(error, status):
    assert trial_status_from_error(error) == status


@pytest.mark.parametrize("trials, share", [(1, 1.0), (2, 0.5), (3, 0.3333), (4, 0.25), (6, 0.1666), (8, 0.125)])
def test_gpu_shares_never_add_up_to_more_than_one_gpu(trials, share):
    assert gpu_share(trials) == share and gpu_share(trials) * trials <= 1.0


@pytest.mark.parametrize("trials, population", [(1, 4), (16, 4), (40, 10), (400, 50)])
def test_nsga2_generations_are_sized_to_the_budget(trials, population):
    assert nsga2_population(trials) == population



def _searcher_for(settings):
    """The engine's real searcher (Ray's OptunaSearch) on the multi-objective space file (no Ray session needed to ask and tell)."""
    from search.config.spaces import load_space
    from search.strategies.searcher import build_searcher
    from tests.conftest import REPO

    return build_searcher(load_space(REPO / "spaces" / "multi_objective.py"), settings, concurrency=2).searcher


def test_a_multi_objective_searcher_tells_optuna_every_value_or_fail():
    searcher = _searcher_for(Settings(objectives="params", trials=8))
    study = searcher._ot_study
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert searcher.metric == ["val_acc", "params"] and searcher.mode == ["max", "min"]
    for trial_id in ("done", "diverged", "crashed", "no_cost"):
        assert {"conv_blocks", "base_width", "lr"} <= set(searcher.suggest(trial_id))
    searcher.on_trial_complete("done", result={"val_acc": 0.9, "params": 1234, "epoch": 2})
    searcher.on_trial_complete("diverged", result={"val_acc": 0.0, "diverged": True, "epoch": 1})
    searcher.on_trial_complete("crashed", result=None, error=True)
    searcher.on_trial_complete("no_cost", result={"val_acc": 0.5, "epoch": 1})
    states = [(t.state, t.values) for t in study.trials]
    assert states == [(TrialState.COMPLETE, [0.9, 1234.0])] + [(TrialState.FAIL, None)] * 3


def test_nsga2_and_single_objective_searchers():
    searcher = _searcher_for(Settings(objectives="params,latency_ms", sampler="nsga2", trials=16))
    assert isinstance(searcher._sampler, optuna.samplers.NSGAIISampler) and len(searcher._ot_study.directions) == 3
    single = _searcher_for(Settings(trials=8))
    assert type(single).__name__ == "OptunaSearch"  # Ray's own class, as resume.json records it
    assert single.metric == "val_acc" and single._ot_study.direction == StudyDirection.MAXIMIZE
    single.suggest("one")
    single.on_trial_complete("one", result={"val_acc": 0.7})
    assert single._ot_study.trials[0].value == 0.7

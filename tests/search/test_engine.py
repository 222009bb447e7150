"""The engine's pure helpers; the engine itself runs in tests/test_end_to_end.py and tests/test_cluster.py."""

import pytest

from search.engine import gpu_share, trial_status_from_error


@pytest.mark.parametrize(
    "error, status",
    [
        ("trainables.classifier.TrialInfeasible: infeasible: out of memory at micro-batch 2 (batch size 64): CUDA out of memory", "infeasible: out of memory"),
        ("search.engine._RepeatedFailure: TrialInfeasible: infeasible: out of memory at micro-batch 2 (batch size 64)", "infeasible: out of memory"),
        ("trainables.classifier.TrialDiverged: training loss is nan at epoch 2, step 3", "error"),
        ("The actor died unexpectedly before finishing this task.", "error"),
    ],
)
def test_a_failed_trial_status_comes_from_its_error(error, status):
    assert trial_status_from_error(error) == status


@pytest.mark.parametrize("trials, share", [(1, 1.0), (2, 0.5), (3, 0.3333), (4, 0.25), (6, 0.1666), (8, 0.125)])
def test_gpu_shares_never_add_up_to_more_than_one_gpu(trials, share):
    assert gpu_share(trials) == share and gpu_share(trials) * trials <= 1.0

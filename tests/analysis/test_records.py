"""Trial statuses: one set of constants, read back from the texts the recorder writes."""

import pytest

from analysis.records import TrialStatus
from search.trial import trial_status_from_error
from trainables.contract import INFEASIBLE


@pytest.mark.parametrize(
    "text, status, ended, failed, comparable",
    [
        ("", TrialStatus.PENDING, False, False, True),
        ("pending", TrialStatus.PENDING, False, False, True),
        ("running", TrialStatus.RUNNING, False, False, True),
        ("completed", TrialStatus.COMPLETED, True, False, True),
        ("stopped early at epoch 2", TrialStatus.STOPPED, True, False, True),
        ("diverged at epoch 3", TrialStatus.DIVERGED, True, False, False),
        ("error", TrialStatus.ERROR, True, True, False),
        ("infeasible: out of memory", TrialStatus.INFEASIBLE, True, True, False),
    ],
)
def test_a_status_text_is_read_as_one_status(text, status, ended, failed, comparable):
    assert TrialStatus.of(text) is status
    assert (status.is_ended(), status.is_failed(), status.is_comparable()) == (ended, failed, comparable)


def test_the_texts_the_engine_writes_read_back_as_their_status():
    assert TrialStatus.of(TrialStatus.STOPPED.at_epoch(2)) is TrialStatus.STOPPED
    assert TrialStatus.STOPPED.at_epoch(2) == "stopped early at epoch 2"
    assert TrialStatus.of(TrialStatus.DIVERGED.at_epoch(1)) is TrialStatus.DIVERGED
    line = f"trainables.contract.TrialInfeasible: {INFEASIBLE} at micro-batch 2 (batch size 64): CUDA out of memory"
    assert TrialStatus.of(trial_status_from_error(line)) is TrialStatus.INFEASIBLE
    assert TrialStatus.of(trial_status_from_error("RuntimeError: boom")) is TrialStatus.ERROR

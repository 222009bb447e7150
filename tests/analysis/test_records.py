"""Trial statuses: one set of constants, read back from the texts the recorder writes; and the
run directory's atomic writes."""

import concurrent.futures
import os
import stat

import pytest

from analysis.records import TrialStatus, read_json, write_json, write_text
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


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    """write_text: the folder is made when missing, the text replaces the file in one rename, and
    a write that fails leaves the previous version and no temporary file."""
    path = tmp_path / "trials" / "t1" / "status.json"
    write_json(path, {"status": "running"})
    assert read_json(path) == {"status": "running"}
    write_json(path, {"status": "completed"})
    assert read_json(path) == {"status": "completed"}
    with pytest.raises(TypeError):  # raised by the file's write, after the temporary file opened
        write_text(path, object())
    assert read_json(path) == {"status": "completed"}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_a_written_file_has_the_permissions_any_new_file_gets(tmp_path):
    """A record is readable as any file the user creates (the umask decides), not private to its
    writer as a ``mkstemp`` file is (0600): a run directory on a cluster's shared disk is read by others."""
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "status.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "status.json").stat().st_mode) == 0o644


def test_threads_writing_one_file_never_share_a_temporary_file(tmp_path):
    """Each writer has its own temporary name (host, process, thread): concurrent writers of one
    path leave one whole version, never a mix or a rename of another's half-written file."""
    path = tmp_path / "status.json"
    texts = [str(n) * 100_000 for n in range(8)]

    def write(text: str) -> None:
        for _ in range(20):
            write_text(path, text)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(write, texts))
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]

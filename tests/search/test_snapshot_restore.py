"""restore_snapshot_checkpoints on hand-made experiment directories: which checkpoint a trial goes
on from when Ray's last snapshot names one that is gone. The format is Ray's (2.60): each entry
of ``trial_data`` is the trial's state and its run metadata, each a JSON string; a real snapshot
made by a real search is read in tests/test_interruptions.py."""

from __future__ import annotations

import json

import pytest

from search.tuner import restore_snapshot_checkpoints


def _experiment(path, named, reported, on_storage, status="RUNNING"):
    """One trial "t1": the snapshot names ``named``; result.json names ``reported``; the checkpoint
    directories ``on_storage`` exist, each holding a file with its own name."""
    trial_path = path / "t1"
    trial_path.mkdir(parents=True)
    for name in on_storage:
        (trial_path / name).mkdir()
        (trial_path / name / "which").write_text(name)
    (trial_path / "result.json").write_text("".join(json.dumps({"checkpoint_dir_name": n}) + "\n" for n in reported))
    trial = {"trial_id": "t1", "status": status, "relative_logdir": "t1"}
    metadata = {"last_result": {"checkpoint_dir_name": named}}
    (path / "experiment_state-2026-12-03_16-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps(metadata)]]})
    )
    return trial_path


def _checkpoints(count: int) -> list[str]:
    return [f"checkpoint_{k:06d}" for k in range(count)]


@pytest.mark.parametrize(
    ("reported", "on_storage", "goes_on_from"),
    [
        # result.json names checkpoints 0-9, Ray kept 8 and 9: the newest it names.
        (_checkpoints(10), _checkpoints(10)[8:], "checkpoint_000009"),
        # result.json lags: it names 0-7, all deleted, while 8, 9 and 10 are there. The newest, 10,
        # may be half-written; 9 is whole.
        (_checkpoints(8), _checkpoints(11)[8:], "checkpoint_000009"),
        # Only one later checkpoint: that one.
        (_checkpoints(8), ["checkpoint_000008"], "checkpoint_000008"),
    ],
    ids=["named-in-result-json", "result-json-lags", "one-later-checkpoint"],
)
def test_the_checkpoint_the_snapshot_names_is_put_back_from_the_newest_whole_one(tmp_path, reported, on_storage, goes_on_from):
    trial_path = _experiment(tmp_path, "checkpoint_000007", reported, on_storage)
    (line,) = restore_snapshot_checkpoints(tmp_path)
    assert line == ("trial t1: Ray's last snapshot names checkpoint_000007, deleted after it; "
                    f"the trial goes on from its newest checkpoint, {goes_on_from}")
    assert (trial_path / "checkpoint_000007" / "which").read_text() == goes_on_from
    assert sorted(p.name for p in trial_path.glob("checkpoint_*")) == sorted([*on_storage, "checkpoint_000007"])


@pytest.mark.parametrize(
    ("status", "on_storage"),
    [
        ("RUNNING", ["checkpoint_000007", "checkpoint_000008"]),  # the named one is still there
        ("TERMINATED", ["checkpoint_000008", "checkpoint_000009"]),  # finished: Ray does not restore it
        ("RUNNING", []),  # result.json's checkpoints all gone, and none later
    ],
    ids=["named-one-exists", "trial-finished", "nothing-left"],
)
def test_nothing_is_put_back_where_ray_needs_nothing_or_nothing_is_later(tmp_path, status, on_storage):
    trial_path = _experiment(tmp_path, "checkpoint_000007", _checkpoints(8), on_storage, status=status)
    assert restore_snapshot_checkpoints(tmp_path) == []
    assert sorted(p.name for p in trial_path.glob("checkpoint_*")) == on_storage

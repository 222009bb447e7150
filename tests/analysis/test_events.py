import threading

import pytest

from analysis.events import EventFile


def _read(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return events


def test_tensorboard_reads_the_same_scalars_and_hparams_as_from_its_own_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    params, best = {"lr": 0.01, "optimizer": "adam", "blocks": 2, "freeze": True, "sizes": (8, 16)}, {"best_val_acc": 0.75}
    curve = [(1, 0.5), (2, 0.625), (3, 0.75)]
    ours = EventFile(tmp_path / "ours")
    threads = threading.active_count()
    for epoch, value in curve:
        ours.scalar("val_acc", value, step=epoch)
        ours.flush()
    ours.hparams(params, best)
    ours.scalar("best_val_acc", 0.75)
    assert threading.active_count() == threads  # written in the caller's thread, no writer thread
    ours.close()

    theirs = SummaryWriter(log_dir=str(tmp_path / "theirs"))
    for epoch, value in curve:
        theirs.add_scalar("val_acc", value, global_step=epoch)
    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    for summary in hparams(values, best):
        theirs.file_writer.add_summary(summary)
    theirs.add_scalar("best_val_acc", 0.75)
    theirs.close()

    read, reference = _read(tmp_path / "ours"), _read(tmp_path / "theirs")
    for tag in ("val_acc", "best_val_acc"):
        assert [(e.step, e.value) for e in read.Scalars(tag)] == [(e.step, e.value) for e in reference.Scalars(tag)]
    assert [(e.step, e.value) for e in read.Scalars("val_acc")] == [(s, pytest.approx(v)) for s, v in curve]
    assert read.PluginTagToContent("hparams") == reference.PluginTagToContent("hparams")
    (name,) = [p.name for p in (tmp_path / "ours").iterdir()]
    assert name.startswith("events.out.tfevents.")


def test_nothing_is_written_before_the_first_record(tmp_path):
    events = EventFile(tmp_path / "trial")
    events.flush()
    events.close()
    assert not (tmp_path / "trial").exists()

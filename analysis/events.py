"""A TensorBoard event file written in the caller's own thread: a trial's (search/recorder.py)
and a retrained model's (analysis/retrain.py).

``torch.utils.tensorboard.SummaryWriter`` starts a writer thread for each file, and its ``flush``
waits for that thread. With one writer per trial and a flush per epoch, a search of short trials
spent about a fifth of the driver's samples there (py-spy, 6,000 trials of 3 x 50 ms, 8 at once,
on 2 cores: 6.3% starting writers, 6.8% in flush, 10.0% in their threads). An epoch's scalars
are a few hundred bytes, so this writes each record at once, in the framing and under the file
name that TensorBoard's own writer uses.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

__all__ = ["EventFile"]

_files = itertools.count()  # as TensorBoard's own writer, a per-process count ends the file name


class EventFile:
    """One event file in ``directory``, opened at the first write."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._records = None  # tensorboard's RecordWriter over the open file

    def scalar(self, tag: str, value: float, step: int | None = None) -> None:
        from torch.utils.tensorboard.summary import scalar  # imports torch: only once a trial reports

        self._write(scalar(tag, value), step)

    def hparams(self, params: dict, metrics: dict[str, float]) -> None:
        """The HParams plugin's three summaries: ``params`` (a value that is not a number, a bool
        or a string as its text) against ``metrics``, which the plugin reads from scalars of the
        same names."""
        from torch.utils.tensorboard.summary import hparams  # imports torch: only once a trial ends

        values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
        for summary in hparams(values, metrics):
            self._write(summary)

    def flush(self) -> None:
        if self._records is not None:
            self._records.flush()

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None

    def _write(self, summary, step: int | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        event = Event(wall_time=time.time(), summary=summary)
        if step is not None:
            event.step = int(step)
        self._open().write(event.SerializeToString())

    def _open(self):
        if self._records is None:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.summary.writer.record_writer import RecordWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_files)}"
            self._records = RecordWriter(open(self.directory / name, "ab"))  # noqa: SIM115 (closed in close)
            self._records.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        return self._records

"""Progress of a search that scales to thousands of fast trials.

On a terminal, one tqdm bar (finished trials of the budget, ETA, the best score so far), redrawn
at most once a second. Otherwise (a log file, a pipe, the Python API's logging), one plain line
at most every ``every_s`` seconds, however fast trials finish, and one when the last trial ends.
No Ray here: the engine's recorder calls ``update``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

__all__ = ["BestSoFar", "Progress"]


class BestSoFar:
    """The best value of the search's metric reported so far, and where (trial, epoch): what the
    progress line and the MLflow parent run show."""

    def __init__(self, mode: str):
        self.sign = 1 if mode == "max" else -1
        self.value: float | None = None
        self.trial_id: str | None = None
        self.epoch: int = 0

    def offer(self, value: float, trial_id: str, epoch: int) -> bool:
        """Keep ``value`` when it beats the best so far (or is the first); True when it does."""
        if self.value is not None and not self.sign * value > self.sign * self.value:
            return False
        self.value, self.trial_id, self.epoch = value, trial_id, epoch
        return True


class Progress:
    """``update(finished, total, line)``: show where a search is, without flooding the output.

    ``out`` receives the plain lines; ``terminal`` (default: ``out`` is ``print`` and stdout is a
    terminal) draws a tqdm bar on stdout instead. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        out: Callable[[str], None],
        every_s: float = 15.0,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar_file: Any = None,
    ):
        if every_s <= 0:
            raise ValueError(f"The value of `every_s` is {every_s}, but must be > 0 (seconds between lines).")
        self.out, self.every_s, self.clock = out, every_s, clock
        if terminal is None:
            terminal = out is print and sys.stdout.isatty()
        self.terminal = terminal
        self.bar_file = bar_file
        self._bar = None
        self._last = -float("inf")
        self._lines = 0
        self._done_shown = False

    def due(self, finished: int, total: int) -> bool:
        """Whether ``update`` would show anything now: lets the caller skip composing the line."""
        if self.terminal:
            return self._bar is None or finished != self._bar.n
        return (finished >= total and not self._done_shown) or self.clock() - self._last >= self.every_s

    def update(self, finished: int, total: int, line: str, summary: str = "") -> None:
        """``line``: the whole state as text; ``summary``: the short part a bar shows beside it."""
        if self.terminal:
            self._draw(finished, total, summary or line)
            return
        now = self.clock()
        last = finished >= total and not self._done_shown
        if not last and now - self._last < self.every_s:
            return
        self._done_shown = self._done_shown or last
        self._last = now
        self._lines += 1
        self.out(line)

    def _draw(self, finished: int, total: int, summary: str) -> None:
        from tqdm import tqdm

        if self._bar is None:
            file = self.bar_file or sys.stdout
            try:
                width = os.get_terminal_size(file.fileno()).columns
            except (AttributeError, OSError, ValueError):  # not a real terminal (a test's StringIO)
                width = 0
            # A terminal that reports no width (a pty nobody sized) would get an empty bar.
            size = {"dynamic_ncols": True} if width > 0 else {"ncols": 100, "nrows": 24}
            self._bar = tqdm(
                total=total,
                unit="trial",
                **size,
                mininterval=1.0,  # redraws at most once a second, however fast trials finish
                # stdout, the terminal that was checked (Ray Tune swaps sys.stderr in the driver).
                file=file,
                smoothing=0.1,
            )
        if self._bar.total != total:
            self._bar.total = total
        if finished > self._bar.n:
            self._bar.set_postfix_str(summary, refresh=False)
            self._bar.update(finished - self._bar.n)  # draws only when mininterval has passed

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def lines(self) -> int:
        """Plain lines written so far."""
        return self._lines

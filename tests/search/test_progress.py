import io
import re
import time

import pytest

from search.progress import Progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_at_most_every_period_and_always_the_last():
    clock, lines = _Clock(), []
    progress = Progress(lines.append, every_s=15.0, terminal=False, clock=clock)
    for finished in range(1, 1001):  # 1,000 trials ending 10 ms apart: 10 s in all
        clock.now += 0.01
        if progress.due(finished, 1000):
            progress.update(finished, 1000, f"{finished}/1000 finished")
    assert lines == ["1/1000 finished", "1000/1000 finished"]
    clock.now += 100
    progress.update(1000, 1000, "again")  # after the period, a heartbeat is allowed again
    assert lines[-1] == "again"


def test_a_terminal_gets_one_bar_redrawn_at_most_about_once_a_second():
    bar = io.StringIO()
    progress = Progress(print, terminal=True, bar_file=bar)
    started = time.monotonic()
    for finished in range(1, 1001):  # 1,000 trials ending about 2 ms apart
        time.sleep(0.002)
        if progress.due(finished, 1000):
            progress.update(finished, 1000, "line", summary=f"best val_acc 0.{finished:04d}")
    seconds = time.monotonic() - started
    progress.close()
    redraws = bar.getvalue().count("\r")
    text = bar.getvalue()
    assert "1000/1000" in text and re.search(r"\[\d\d:\d\d<\d\d:\d\d", text)  # [elapsed<ETA]
    assert "best val_acc" in text
    assert redraws <= seconds + 3, (redraws, seconds)


def test_the_period_must_be_positive():
    with pytest.raises(ValueError, match=r"`every_s` is 0, but must be > 0"):
        Progress(print, every_s=0)

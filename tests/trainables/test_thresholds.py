"""The two data-loading thresholds and their environment overrides: `auto` streams from
AUTO_STREAM_BYTES (IMAGE_SEARCH_AUTO_STREAM_BYTES), and a streamed cache larger than half of
physical memory (IMAGE_SEARCH_QUASI_RANDOM_BYTES) is read in quasi-random order."""

from __future__ import annotations

import pytest

from trainables.data import AUTO_STREAM_BYTES, AUTO_STREAM_ENV, choose_loading
from trainables.streaming import QUASI_RANDOM_ENV, larger_than_memory


def test_auto_streams_from_its_threshold_and_the_environment_moves_it(monkeypatch):
    monkeypatch.delenv(AUTO_STREAM_ENV, raising=False)
    assert choose_loading("auto", AUTO_STREAM_BYTES - 1) == "memory"
    assert choose_loading("auto", AUTO_STREAM_BYTES) == "stream"
    monkeypatch.setenv(AUTO_STREAM_ENV, "1000")
    assert choose_loading("auto", 999) == "memory" and choose_loading("auto", 1000) == "stream"
    assert choose_loading("memory", 10**12) == "memory" and choose_loading("stream", 1) == "stream"


def test_quasi_random_above_half_of_memory_or_the_environment_threshold(monkeypatch):
    monkeypatch.delenv(QUASI_RANDOM_ENV, raising=False)
    assert not larger_than_memory(1) and larger_than_memory(2**60)
    monkeypatch.setenv(QUASI_RANDOM_ENV, "0")
    assert larger_than_memory(1) and not larger_than_memory(0)


@pytest.mark.parametrize("variable", [AUTO_STREAM_ENV, QUASI_RANDOM_ENV])
def test_a_threshold_that_is_not_a_byte_count_is_a_clear_error(monkeypatch, variable):
    monkeypatch.setenv(variable, "1 GiB")
    with pytest.raises(ValueError, match=rf"^{variable} is '1 GiB', but must be a number of bytes \(an integer >= 0\)"):
        choose_loading("auto", 5) if variable == AUTO_STREAM_ENV else larger_than_memory(5)

"""A polling source's windows and saved state (pure logic; the real polls: tests/integration/test_poll.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crawlstore.crawl.poll import PollState, windows

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_windows_meet_exactly_and_a_gap_is_cut_into_the_widest_allowed() -> None:
    cut = list(windows(T0, T0 + timedelta(minutes=150), timedelta(hours=1)))
    assert [(a - T0, b - T0) for a, b in cut] == [
        (timedelta(0), timedelta(hours=1)),
        (timedelta(hours=1), timedelta(hours=2)),
        (timedelta(hours=2), timedelta(minutes=150)),
    ]
    assert list(windows(T0, T0, timedelta(hours=1))) == []  # nothing new yet
    assert (
        list(windows(T0 + timedelta(seconds=5), T0, timedelta(hours=1))) == []
    )  # a state ahead of the clock


def test_the_state_keeps_the_end_of_the_last_window_and_says_when_it_cannot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = PollState(tmp_path / "poll_state.json")
    assert state.load() is None and not caplog.records  # first run: nothing to say
    state.save(T0)
    assert state.load() == T0
    state.path.write_text("{not json")
    assert state.load() is None and "unreadable" in caplog.text
    state.path.write_text('{"until": "2026-12-01T12:00:00"}')
    assert state.load() == T0 and "no time zone" in caplog.text


def test_a_window_begun_and_not_finished_is_pending_until_it_is_saved(tmp_path: Path) -> None:
    state = PollState(tmp_path / "poll_state.json")
    assert state.pending() is None
    state.begin(T0, T0 + timedelta(seconds=10))
    assert state.pending() == (T0, T0 + timedelta(seconds=10))
    assert state.load() == T0  # not done: the next poll starts at it again
    state.save(T0 + timedelta(seconds=10))
    assert state.pending() is None and state.load() == T0 + timedelta(seconds=10)

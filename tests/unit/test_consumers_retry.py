"""Backoff delays and the dead-letter circuit breaker."""

from __future__ import annotations

import pytest

from consumers.breaker import DeadLetterBreaker
from consumers.retry import Backoff

pytestmark = pytest.mark.unit


def test_backoff_grows_exponentially_and_is_capped() -> None:
    top = Backoff(0.25, 4.0, rng=lambda: 1.0)
    assert [top.next_delay() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    bottom = Backoff(0.25, 4.0, rng=lambda: 0.0)
    assert [bottom.next_delay() for _ in range(6)] == [0.125, 0.25, 0.5, 1.0, 2.0, 2.0]


def test_backoff_jitter_stays_within_half_and_full_ceiling() -> None:
    backoff = Backoff(1.0, 30.0)
    for _ in range(200):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling <= 30.0


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(0.5, 8.0, rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize("args", [(0, 1.0), (2.0, 1.0), (1.0, 2.0, 0.5)])
def test_backoff_rejects_nonsense(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)


def test_breaker_trips_on_too_many_consecutive_dead_letters() -> None:
    breaker = DeadLetterBreaker(max_consecutive=5, max_ratio=1.0, window=1000, min_records=1000)
    assert breaker.check([True] * 5) is None
    reason = breaker.check([False] + [True] * 6)
    assert reason is not None and "consecutive" in reason


def test_breaker_counts_consecutive_across_batches() -> None:
    breaker = DeadLetterBreaker(max_consecutive=5, max_ratio=1.0, window=1000, min_records=1000)
    breaker.record([True] * 4)
    assert breaker.check([True]) is None
    assert breaker.check([True, True]) is not None
    assert breaker.check([False, True, True]) is None


def test_breaker_trips_on_ratio_over_the_window_once_enough_records_were_seen() -> None:
    breaker = DeadLetterBreaker(max_consecutive=0, max_ratio=0.5, window=10, min_records=10)
    assert breaker.check([True, False] * 4 + [True]) is None  # 9 seen: too few to judge
    breaker.record([True, False] * 5)  # exactly 50%: not above
    assert breaker.ratio == 0.5
    assert breaker.check([False]) is None
    assert breaker.check([True]) is None  # evicts a dead letter: still 5 of 10
    assert breaker.check([True, True]) is not None  # 6 of the last 10


def test_breaker_window_forgets_old_records() -> None:
    breaker = DeadLetterBreaker(max_consecutive=0, max_ratio=0.3, window=10, min_records=5)
    breaker.record([True, True, False, False, False, False, False, False, False, False])
    breaker.record([False, False])  # the two dead letters left the window
    assert breaker.ratio == 0.0
    assert breaker.check([True, True, True]) is None  # 3 of 10


def test_check_does_not_change_the_breaker() -> None:
    breaker = DeadLetterBreaker(max_consecutive=3, max_ratio=0.9, window=100, min_records=50)
    breaker.record([True, True])
    assert breaker.check([True, True]) is not None
    assert breaker.check([True]) is None
    assert breaker.ratio == 1.0


def test_good_records_never_trip_the_breaker() -> None:
    breaker = DeadLetterBreaker(max_consecutive=1, max_ratio=0.01, window=10, min_records=1)
    breaker.record([True])
    assert breaker.check([False] * 100) is None


def test_a_clean_batch_larger_than_the_window_clears_it() -> None:
    breaker = DeadLetterBreaker(max_consecutive=3, max_ratio=0.5, window=10, min_records=5)
    breaker.record([True, True, True, False, False])
    breaker.record([False] * 7)  # two dead letters evicted, one left
    assert breaker.ratio == 0.1
    breaker.record([False] * 25)
    assert breaker.ratio == 0.0 and len(breaker._recent) == 10
    assert breaker.check([True] * 3) is None  # the run was reset by the good records
    assert breaker.check([True] * 4) is not None

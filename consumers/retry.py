"""The one retry helper: capped exponential backoff with jitter, and the loop that uses it.

The waiting itself belongs to the caller, because the consumer must keep polling Kafka while it
waits (a consumer that stops polling drops out of its group).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

from consumers.errors import TransientError

T = TypeVar("T")


class Backoff:
    """Delays of initial, 2x, 4x ... capped at max_s; each drawn from [d/2, d] ("equal jitter").

    Equal jitter keeps a floor under each delay (no hammering a store that just went down) while
    spreading out the retries of many consumers that failed at the same moment.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        multiplier: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or multiplier < 1:
            raise ValueError("need 0 < initial_s <= max_s and multiplier >= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self._rng = rng
        self.attempts = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.max_s, self.initial_s * self.multiplier**self.attempts)

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.attempts += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0


class RetryStopped(Exception):
    """The caller asked to stop while waiting to retry; the last error is the cause."""


def retry(
    call: Callable[[], T],
    *,
    backoff: Backoff,
    wait: Callable[[float], bool],
    on_error: Callable[[Exception, float], object],
    errors: tuple[type[Exception], ...] = (TransientError,),
    give_up_after_s: float = math.inf,
    what: str = "call",
) -> T:
    """Call until it succeeds. After each of `errors`: on_error(error, delay) (log, abort, count),
    then wait(delay), which returns False to stop (RetryStopped). Past `give_up_after_s` the last
    error is raised as a TransientError. Any other exception propagates at once.
    """
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            return call()
        except errors as exc:
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise TransientError(f"{what}: still failing after {give_up_after_s:.0f}s: {exc}") from exc
            on_error(exc, delay)
            if not wait(delay):
                raise RetryStopped(f"{what}: stopped while waiting to retry") from exc

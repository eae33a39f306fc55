"""The one retry helper: capped exponential backoff with jitter.

The waiting itself belongs to the caller, because the consumer must keep polling Kafka while it
waits (a consumer that stops polling drops out of its group).
"""

from __future__ import annotations

import random
from collections.abc import Callable


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

"""A circuit breaker on the dead-letter rate (as arroyo's DLQ limit).

A handful of bad records is normal and goes to the DLQ; a bad deploy or a schema change makes
every record "bad", and dead-lettering the whole topic would hide the problem. The breaker trips
on more than `max_consecutive` dead letters in a row, or on a dead-letter ratio above `max_ratio`
over the last `window` records (once at least `min_records` of them were seen).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence
from itertools import islice, repeat


class DeadLetterBreaker:
    def __init__(self, max_consecutive: int, max_ratio: float, window: int, min_records: int) -> None:
        if window < 1 or not 0 < max_ratio <= 1:
            raise ValueError("need window >= 1 and 0 < max_ratio <= 1")
        self.max_consecutive = max_consecutive
        self.max_ratio = max_ratio
        self.window = window
        self.min_records = min(min_records, window)
        self._recent: deque[bool] = deque(maxlen=window)
        self._dead_in_window = 0
        self._consecutive = 0

    def _add(self, dead: bool) -> str | None:
        if len(self._recent) == self.window and self._recent[0]:
            self._dead_in_window -= 1
        self._recent.append(dead)
        self._dead_in_window += dead
        self._consecutive = self._consecutive + 1 if dead else 0
        if self.max_consecutive > 0 and self._consecutive > self.max_consecutive:
            return f"more than {self.max_consecutive} consecutive records dead-lettered"
        seen = len(self._recent)
        if dead and seen >= self.min_records and self._dead_in_window / seen > self.max_ratio:
            return (
                f"{self._dead_in_window} of the last {seen} records dead-lettered "
                f"(more than {self.max_ratio:.0%})"
            )
        return None

    def check(self, outcomes: Sequence[bool]) -> str | None:
        """Why recording these outcomes (True = dead-lettered) would trip the breaker, else None."""
        if not any(outcomes):
            return None  # good records only reset the run and lower the ratio
        probe = copy.copy(self)
        probe._recent = self._recent.copy()
        for dead in outcomes:
            reason = probe._add(dead)
            if reason:
                return reason
        return None

    def record(self, outcomes: Sequence[bool]) -> None:
        if any(outcomes):
            for dead in outcomes:
                self._add(dead)
            return
        # The usual batch, without a dead letter: one step instead of one per record.
        if not outcomes:
            return
        evicted = len(self._recent) + len(outcomes) - self.window
        if evicted > 0:
            self._dead_in_window -= sum(islice(self._recent, min(evicted, len(self._recent))))
        self._recent.extend(repeat(False, len(outcomes)))
        self._consecutive = 0

    @property
    def ratio(self) -> float:
        return self._dead_in_window / len(self._recent) if self._recent else 0.0

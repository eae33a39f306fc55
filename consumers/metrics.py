"""Counters and gauges of one consumer, their Prometheus text form and the health verdict.

Updated by the consumer loop, read by the HTTP endpoint's thread: every access holds the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

STATES = ("starting", "consuming", "retrying", "stopping", "stopped", "failed")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Health:
    ok: bool
    state: str
    assigned: int
    detail: str


class ConsumerMetrics:
    def __init__(self, sink: str, group: str, rate_window_s: float = 30.0) -> None:
        self.sink = sink
        self.group = group
        self._lock = threading.Lock()
        self._rate_window_s = rate_window_s
        self.consumed = 0
        self.written = 0
        self.dead_lettered = 0
        self.retries = 0
        self.batches = 0
        self.state = "starting"
        self.detail = ""
        self.assigned = 0
        self.lag: dict[tuple[str, int], int] = {}
        self._samples: deque[tuple[float, int]] = deque()

    def add(
        self,
        *,
        consumed: int = 0,
        written: int = 0,
        dead_lettered: int = 0,
        retries: int = 0,
        batches: int = 0,
    ) -> None:
        with self._lock:
            self.consumed += consumed
            self.written += written
            self.dead_lettered += dead_lettered
            self.retries += retries
            self.batches += batches

    def set_state(self, state: str, detail: str = "") -> None:
        assert state in STATES
        with self._lock:
            self.state = state
            self.detail = detail

    def set_partitions(self, assigned: int, lag: dict[tuple[str, int], int]) -> None:
        with self._lock:
            self.assigned = assigned
            self.lag = dict(lag)

    def sample_rate(self, now: float | None = None) -> None:
        """Remember the written count now; the rate is taken over the last window of samples."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, self.written))
            while len(self._samples) > 2 and now - self._samples[0][0] > self._rate_window_s:
                self._samples.popleft()

    def rate(self) -> float:
        """Records written per second over the sampling window."""
        with self._lock:
            if len(self._samples) < 2:
                return 0.0
            (t0, w0), (t1, w1) = self._samples[0], self._samples[-1]
            return (w1 - w0) / (t1 - t0) if t1 > t0 else 0.0

    def health(self) -> Health:
        with self._lock:
            ok = self.state == "consuming" and self.assigned > 0
            detail = self.detail or ("no partitions assigned" if self.assigned == 0 else "")
            return Health(ok, self.state, self.assigned, detail)

    def total_lag(self) -> int:
        with self._lock:
            return sum(self.lag.values())

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        rate = self.rate()
        health = self.health()
        with self._lock:
            base = f'sink="{_escape(self.sink)}",group="{_escape(self.group)}"'
            lines: list[str] = []

            def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in samples:
                    lines.append(
                        f"{name}{{{labels}}} {value:g}"
                        if isinstance(value, float)
                        else f"{name}{{{labels}}} {value}"
                    )

            metric(
                "crawlstore_consumer_records_consumed_total",
                "counter",
                "Records polled from Kafka.",
                [(base, self.consumed)],
            )
            metric(
                "crawlstore_consumer_records_written_total",
                "counter",
                "Records durably written to the store.",
                [(base, self.written)],
            )
            metric(
                "crawlstore_consumer_records_dead_lettered_total",
                "counter",
                "Records sent to the dead-letter topic.",
                [(base, self.dead_lettered)],
            )
            metric(
                "crawlstore_consumer_retries_total",
                "counter",
                "Batch attempts that failed with a transient error and were retried.",
                [(base, self.retries)],
            )
            metric(
                "crawlstore_consumer_batches_total", "counter", "Batches committed.", [(base, self.batches)]
            )
            metric(
                "crawlstore_consumer_records_per_second",
                "gauge",
                "Records written per second, recent average.",
                [(base, float(round(rate, 3)))],
            )
            metric(
                "crawlstore_consumer_assigned_partitions",
                "gauge",
                "Partitions assigned to this consumer.",
                [(base, self.assigned)],
            )
            metric(
                "crawlstore_consumer_up",
                "gauge",
                "1 when consuming with partitions assigned.",
                [(base, int(health.ok))],
            )
            metric(
                "crawlstore_consumer_lag",
                "gauge",
                "Records in the partition not yet durably written by this sink.",
                [
                    (f'{base},topic="{_escape(t)}",partition="{p}"', v)
                    for (t, p), v in sorted(self.lag.items())
                ],
            )
            return "\n".join(lines) + "\n"

"""Reading a DLQ: its partitions between two offsets, the run's progress committed to its own
consumer group, and the pace the run may go at."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.batching import to_record
from consumers.errors import TransientError
from crawlstore.messages import Record

CHUNK_RECORDS = 500
READ_STALL_S = 60.0


class DlqReader:
    """Reads DLQ partitions between two offsets and commits the run's progress to its group."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.group = config.get("group_id")
        self.consumer = KafkaConsumer(**config)

    def partitions(self, topic: str) -> list[TopicPartition]:
        found = self.consumer.partitions_for_topic(topic)
        if not found:
            raise ValueError(
                f"topic {topic} does not exist (python -m crawlstore.init creates the pipeline's)"
            )
        return [TopicPartition(topic, p) for p in sorted(found)]

    def bounds(self, tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        first, end = self.consumer.beginning_offsets(tps), self.consumer.end_offsets(tps)
        return {tp: (int(first[tp]), int(end[tp])) for tp in tps}

    def committed(self, tp: TopicPartition) -> int | None:
        if not self.group:
            return None
        offset = self.consumer.committed(tp, timeout_ms=10_000)
        return None if offset is None else int(offset)

    def chunks(self, tp: TopicPartition, start: int, end: int, size: int) -> Iterator[list[Record]]:
        """The records of [start, end) in offset order, a few hundred at a time."""
        self.consumer.assign([tp])
        self.consumer.seek(tp, start)
        last_progress = time.monotonic()
        while self.consumer.position(tp, timeout_ms=10_000) < end:
            polled = self.consumer.poll(timeout_ms=1000, max_records=size)
            records = [to_record(cr) for cr in polled.get(tp, []) if cr.offset < end]
            if records:
                last_progress = time.monotonic()
                yield records
            elif time.monotonic() - last_progress > READ_STALL_S:
                raise TransientError(f"reading {tp.topic}[{tp.partition}] stalled for {READ_STALL_S:.0f}s")

    def commit(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1)}, timeout_ms=10_000)

    def close(self) -> None:
        self.consumer.close()


def reader_config(group: str | None) -> dict[str, Any]:
    """The consumers' Kafka settings, with the run's group (None for a dry run: it commits nothing)."""
    from consumers.kafka_config import consumer_config
    from consumers.settings import ConsumerSettings, resolve
    from crawlstore.settings import KafkaSettings

    # Any sink's RuntimeConfig carries the settings the one config builder needs.
    runtime = replace(resolve("postgres", ConsumerSettings()), sink="dlq-replay", group=group or "")
    return {**consumer_config(KafkaSettings(), runtime), "group_id": group, "max_poll_records": CHUNK_RECORDS}


class RateLimiter:
    """A token bucket of `rate` records per second holding up to one second's worth."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate or 1.0)
        self.tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()

    def acquire(self, n: int) -> float:
        """Wait until `n` records may go; returns the seconds waited."""
        if not self.rate or n <= 0:
            return 0.0
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        wait = (n - self.tokens) / self.rate
        self._sleep(wait)
        self.tokens, self._last = 0.0, now + wait
        return wait

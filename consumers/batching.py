"""The batch a consumer collects between two flushes, and when to flush it.

A batch holds the decoded items to write, the records already rejected (bad bytes, JSON or
schema) and, per partition, the range of offsets it consumed: committing a batch means
"everything up to the last offset of each range is dealt with", rejected records included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from crawlstore.dlq import STAGE_DESERIALIZE
from crawlstore.items import Item
from crawlstore.messages import Record, RecordRejected, decode_item

_header_value = itemgetter(1)


@dataclass(frozen=True)
class Decoded:
    """A record whose value is a valid item."""

    record: Record
    item: Item

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)

    def document(self) -> bytes:
        """The item as the stores hold it, plus `kafka` lineage, as one UTF-8 JSON object.

        OpenSearch indexes it and HDFS writes it as a line (JSON escapes newlines in values).
        Serialised by pydantic's compiled encoder, the lineage appended to the object.
        """
        r = self.record
        ts = b"null" if r.timestamp_ms is None else b"%d" % r.timestamp_ms
        lineage = b',"kafka":{"topic":%s,"partition":%d,"offset":%d,"timestamp":%s}}' % (
            json.dumps(r.topic).encode(),
            r.partition,
            r.offset,
            ts,
        )
        return self.item.model_dump_json().encode()[:-1] + lineage


@dataclass(frozen=True)
class Rejection:
    """A record that goes to the DLQ, why, and at which stage (crawlstore.dlq.STAGE_*)."""

    record: Record
    error: Exception
    stage: str

    @property
    def source(self) -> tuple[str, int, int]:
        return self.record.topic, self.record.partition, self.record.offset


def to_record(cr: ConsumerRecord) -> Record:
    """kafka-python's record as ours."""
    headers = tuple(cr.headers) if cr.headers else ()
    if not all(map(_header_value, headers)):  # rare: a null (or empty) value; nulls become b""
        """kafka-python's record as ours."""
    headers = tuple((k, v if v is not None else b"") for k, v in headers)
    return Record(cr.topic, cr.partition, cr.offset, cr.key, cr.value, cr.timestamp, headers)


def decode(record: Record) -> Decoded | Rejection:
    """The record's item, or why it goes to the DLQ: bad bytes, JSON or schema."""
    try:
        return Decoded(record, decode_item(record))
    except RecordRejected as exc:
        return Rejection(record, exc, STAGE_DESERIALIZE)
    except Exception as exc:  # e.g. RecursionError on absurdly nested JSON: still this record's fault
        error = RecordRejected("undecodable", f"{type(exc).__name__}: {exc}")
        return Rejection(record, error, STAGE_DESERIALIZE)


@dataclass
class OffsetRange:
    first: int
    last: int


def record_size(record: Record) -> int:
    return len(record.key or b"") + len(record.value or b"")


@dataclass
class Batch:
    items: list[Decoded] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    ranges: dict[TopicPartition, OffsetRange] = field(default_factory=dict)
    # Arrival order of every record (True = rejected at decode), for the circuit breaker.
    arrivals: list[tuple[tuple[str, int, int], bool]] = field(default_factory=list)
    size_bytes: int = 0
    started_at: float = 0.0
    last_added_at: float = 0.0
    # Originals whose DLQ record Kafka already acknowledged (a retried flush does not resend them).
    dead_lettered: set[tuple[str, int, int]] = field(default_factory=set)
    # The items encoded for the store by SinkTask.prepare (None: put() encodes them itself).
    prepared: Any = None

    def __len__(self) -> int:
        return len(self.arrivals)

    def _track(self, record: Record, now: float, rejected: bool) -> None:
        tp = TopicPartition(record.topic, record.partition)
        span = self.ranges.get(tp)
        if span is None:
            self.ranges[tp] = OffsetRange(record.offset, record.offset)
        else:
            span.first = min(span.first, record.offset)
            span.last = max(span.last, record.offset)
        if not self.arrivals:
            self.started_at = now
        self.last_added_at = now
        self.prepared = None  # encoded without this record: put() must not use it
        self.size_bytes += record_size(record)
        self.arrivals.append(((record.topic, record.partition, record.offset), rejected))

    def add_item(self, decoded: Decoded, now: float) -> None:
        self._track(decoded.record, now, rejected=False)
        self.items.append(decoded)

    def add_rejected(self, rejection: Rejection, now: float) -> None:
        self._track(rejection.record, now, rejected=True)
        self.rejected.append(rejection)

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to resume from once this batch is committed."""
        return {tp: span.last + 1 for tp, span in self.ranges.items()}

    def outcomes(self, sink_rejected: Iterable[Rejection]) -> list[bool]:
        """Dead-lettered or not, per record in arrival order."""
        refused = {r.source for r in sink_rejected}
        return [dead or source in refused for source, dead in self.arrivals]

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget the records of partitions this consumer no longer owns; returns how many."""
        gone = set(partitions) & set(self.ranges)
        if not gone:
            return 0
        before = len(self.arrivals)
        self.prepared = None
        names = {(tp.topic, tp.partition) for tp in gone}
        self.items = [d for d in self.items if (d.record.topic, d.record.partition) not in names]
        self.rejected = [r for r in self.rejected if (r.record.topic, r.record.partition) not in names]
        self.arrivals = [a for a in self.arrivals if a[0][:2] not in names]
        self.dead_lettered = {s for s in self.dead_lettered if s[:2] not in names}
        for tp in gone:
            del self.ranges[tp]
        self.size_bytes = sum(record_size(d.record) for d in self.items) + sum(
            record_size(r.record) for r in self.rejected
        )
        return before - len(self.arrivals)


@dataclass(frozen=True)
class BatchPolicy:
    """Flush when the batch is big enough (records or bytes), old enough, or the input went quiet."""

    max_records: int
    max_bytes: int
    max_wait_s: float
    idle_s: float

    def due(self, batch: Batch, now: float) -> str | None:
        """Why the batch should be flushed now, or None."""
        if not len(batch):
            return None
        if len(batch) >= self.max_records:
            return "records"
        if batch.size_bytes >= self.max_bytes:
            return "bytes"
        if now - batch.started_at >= self.max_wait_s:
            return "time"
        if now - batch.last_added_at >= self.idle_s:
            return "idle"
        return None

    def seconds_until_due(self, batch: Batch, now: float) -> float | None:
        """How long the batch may wait for more records (None when it is empty)."""
        if not len(batch):
            return None
        if self.due(batch, now):
            return 0.0
        return max(
            0.0,
            min(batch.started_at + self.max_wait_s, batch.last_added_at + self.idle_s) - now,
        )

    def room(self, batch: Batch) -> int:
        """How many more records the batch takes before it is due by count."""
        return max(1, self.max_records - len(batch))

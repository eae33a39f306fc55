"""What the dead-letter and parking topics hold, read from Kafka incrementally.

Each refresh reads only the records added since the last one (a DLQ keeps its records for good,
so reading it whole every few seconds would not scale), within a time budget: a large backlog
shows as "read N of M" until it is caught up. A partition whose log went backwards (the topic
was re-created) or lost its start (retention) is counted again from its start.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from crawlstore.connectors import CONNECTORS
from crawlstore.dlq import failure_context

log = logging.getLogger(__name__)
CLIENT_ID = "crawlstore-pipeline-page"
UNKNOWN = "?"  # a dead letter without a sink or an error kind in its headers
UNREADABLE = "unreadable_headers"
Offsets = dict[TopicPartition, int]
NEWEST = 10  # newest dead letters kept per topic
TEXT_MAX = 500  # a reason or key is cut to this many characters for the page


@dataclass(frozen=True)
class Letter:
    """One dead letter as the page lists it: where it came from and why it failed."""

    partition: int
    offset: int
    key: str
    sink: str
    stage: str
    error_kind: str
    exception_class: str
    reason: str
    failed_at: str | None
    attempts: int
    replay_count: int
    origin: str  # topic/partition/offset of the record that failed; "topic (crawl)" before Kafka
    exact: bool  # its sink and error kind come from its own headers (a Replay can select them)


def _text(raw: bytes | None) -> str:
    value = (raw or b"").decode("utf-8", errors="replace")
    return value if len(value) <= TEXT_MAX else value[:TEXT_MAX] + "…"


def letter_of(message: Any) -> Letter:
    try:
        ctx = failure_context(message.headers or [])
    except ValueError as exc:  # a record with unreadable failure headers is listed, never fatal
        return Letter(
            message.partition, message.offset, _text(message.key), UNKNOWN, "", UNREADABLE, "",
            _text(f"its failure headers cannot be read: {exc}".encode()), None, 0, 0, "?", False,
        )  # fmt: skip
    return Letter(
        partition=message.partition,
        offset=message.offset,
        key=_text(message.key),
        sink=ctx.connector or UNKNOWN,
        stage=ctx.stage,
        error_kind=ctx.error_kind or ctx.exception_class or UNKNOWN,
        exception_class=ctx.exception_class,
        reason=_text(ctx.exception_message.encode()),
        failed_at=ctx.failed_at.isoformat() if ctx.failed_at else None,
        attempts=ctx.attempts,
        replay_count=ctx.replay_count,
        # Validation failures never reached Kafka: they have a topic but no partition and offset.
        origin=f"{ctx.topic}/{ctx.partition}/{ctx.offset}" if ctx.partition >= 0 else f"{ctx.topic} (crawl)",
        exact=bool(ctx.connector in CONNECTORS and ctx.error_kind),
    )


@dataclass
class TopicLetters:
    """The running counts of one dead-letter (or parking) topic."""

    topic: str
    position: dict[int, int] = field(default_factory=dict)  # next offset to read, per partition
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sink, error kind) -> records
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)  # newest reason per group
    inexact: set[tuple[str, str]] = field(default_factory=set)  # groups a Replay cannot select exactly
    end: dict[int, int] = field(default_factory=dict)  # Kafka's end offsets at the last refresh
    newest: deque[Letter] = field(default_factory=lambda: deque(maxlen=NEWEST))
    records: int = 0  # in the topic (Kafka's end minus start offsets)
    read: int = 0  # of them counted so far

    def reset(self) -> None:
        self.position.clear()
        self.counts.clear()
        self.reasons.clear()
        self.inexact.clear()
        self.newest.clear()

    def add(self, message: Any) -> None:
        letter = letter_of(message)
        group = (letter.sink, letter.error_kind)
        self.counts[group] += 1
        self.reasons[group] = letter.reason
        if not letter.exact:
            self.inexact.add(group)
        self.newest.append(letter)
        self.position[message.partition] = message.offset + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "records": self.records,
            "read": self.read,
            "complete": self.read >= self.records,
            # The last offset counted, when the topic has one partition (as DLQs do): a Replay
            # pins its runs to it, so the real run replays what its dry run reported.
            "last_offset": self.position[0] - 1 if list(self.end) == [0] and self.position.get(0) else None,
            "groups": [
                {
                    "sink": sink,
                    "error_kind": kind,
                    "count": n,
                    "reason": self.reasons[(sink, kind)],
                    "replayable": (sink, kind) not in self.inexact,
                }
                for (sink, kind), n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "newest": [
                asdict(x)
                for x in sorted(self.newest, key=lambda x: (x.failed_at or "", x.offset), reverse=True)
            ],
        }


class LetterReader:
    """Reads the dead-letter topics for the page; one per process, not thread-safe (callers lock)."""

    def __init__(self, bootstrap_servers: str, timeout_ms: int) -> None:
        self._servers = bootstrap_servers
        self._timeout_ms = timeout_ms
        self._consumer: KafkaConsumer | None = None
        self.topics: dict[str, TopicLetters] = {}

    @property
    def consumer(self) -> KafkaConsumer:
        # No group, no commits: it only reads, with positions it keeps itself.
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self._servers,
                client_id=CLIENT_ID,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a position lost to retention: read from the start
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        return self._consumer

    def offsets(
        self, tps: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(end, start) offsets of the partitions, each request bounded."""
        end = self.consumer.end_offsets(tps, timeout_ms=self._timeout_ms)
        return end, self.consumer.beginning_offsets(tps, timeout_ms=self._timeout_ms)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def refresh(
        self, topic: str, begin: dict[int, int], end: dict[int, int], budget_s: float
    ) -> TopicLetters:
        """Count what `topic` gained since the last refresh, for at most `budget_s` seconds."""
        state = self.topics.setdefault(topic, TopicLetters(topic))
        if any(state.position.get(p, begin[p]) < begin[p] or state.position.get(p, 0) > end[p] for p in end):
            log.info("dead-letter topic %s went back or lost its start: counting it again", topic)
            state.reset()
        state.records, state.end = sum(end[p] - begin[p] for p in end), dict(end)
        todo = {p: state.position.get(p, begin[p]) for p in end if state.position.get(p, begin[p]) < end[p]}
        if todo:
            self._read(state, todo, end, time.monotonic() + budget_s)
        state.read = sum(min(state.position.get(p, begin[p]), end[p]) - begin[p] for p in end)
        return state

    def _read(self, state: TopicLetters, todo: dict[int, int], end: dict[int, int], deadline: float) -> None:
        consumer = self.consumer
        partitions = [TopicPartition(state.topic, p) for p in todo]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, todo[tp.partition])
        while True:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=2000).items():
                for message in batch:
                    if message.offset < end[tp.partition]:
                        state.add(message)
            # Offsets that hold no record (transaction markers, compaction) move the position too.
            for tp in partitions:
                p = tp.partition
                state.position[p] = min(end[p], max(state.position.get(p, todo[p]), consumer.position(tp)))
            if all(state.position[p] >= end[p] for p in todo):
                return
            if time.monotonic() >= deadline:
                break
        log.info(
            "dead-letter topic %s: read %d of %d records so far (more on the next refresh)",
            state.topic,
            sum(state.counts.values()),
            state.records,
        )

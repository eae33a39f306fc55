"""Replay dead letters: back into the sink they failed in, or onto their original topic.

A run reads `<topic>-dlq` up to the end offsets it saw when it started and picks the records in
scope (failure time, DLQ offsets, failing sink, error class). Each one goes back where it failed:

- target `sink` (default): records a sink dead-lettered are written to that sink only, through
  its SinkTask lifecycle; records the crawl DAG's validation refused are validated again and, if
  valid now, published to the original topic (so every sink gets them).
- target `topic`: the record goes back onto its original topic, and every sink sees it again.

A record that fails again goes back to the DLQ with its replay count increased, or to
`<topic>-dlq-parking` once the count reaches `max_replays`: nothing loops, nothing is lost.

The PostgreSQL ledger `dlq_replays` lists every DLQ offset some run has dealt with, written once
the outcome is durable; every run skips what it lists, so a record is handled once whichever run
gets to it. Offsets are committed to the run's own consumer group (never the sinks' groups) after
each durable chunk: a killed run resumes there, and the group's lag shows what is left. The
crash window between a durable write and its ledger row is covered by the sinks' idempotence
(PostgreSQL stale-write guard, OpenSearch external versions) and, for HDFS, by reading which DLQ
offsets the committed files already hold. Runs of the same DLQ are serialised by an advisory lock.
"""

from __future__ import annotations

import argparse
import bisect
import fnmatch
import json
import logging
import re
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import requests
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition
from psycopg2.extensions import connection as PgConnection
from psycopg2.extras import execute_values

from consumers.batching import Batch, Decoded, Rejection
from consumers.errors import TransientError
from consumers.retry import Backoff
from consumers.sink import SinkTask
from crawlstore.dlq import (
    H_FAILED_AT,
    OURS,
    PREFIX,
    STAGE_DESERIALIZE,
    STAGE_VALIDATE,
    FailureContext,
    dead_letter,
    failure_context,
    replay_headers,
)
from crawlstore.messages import H_RUN_ID, OutgoingRecord, Record, RecordRejected, decode_item, encode_item
from crawlstore.settings import PostgresSettings
from crawlstore.topics import DLQ_SUFFIX, PARKING_SUFFIX, PIPELINE_TOPICS, WEEK_MS, dlq_topic, parking_topic

log = logging.getLogger(__name__)
T = TypeVar("T")

Target = Literal["sink", "topic"]
TARGETS: tuple[Target, ...] = ("sink", "topic")
SINK_CONNECTORS = ("postgres", "opensearch", "hdfs")
VALIDATE = "validate"
CONNECTORS = (*SINK_CONNECTORS, VALIDATE)
Action = Literal["sink", "validate", "republish"]
# Target `sink`: what happens to a dead letter of each connector.
ACTIONS: dict[str, Action] = {"postgres": "sink", "opensearch": "sink", "hdfs": "sink", VALIDATE: "validate"}

# Outcomes (the ledger's `outcome`), and what a dry run says would happen instead.
REPLAYED, FAILED_AGAIN, PARKED, REPUBLISHED = "replayed", "failed_again", "parked", "republished"
OUTCOMES = (REPLAYED, FAILED_AGAIN, PARKED, REPUBLISHED)
WOULD = {
    REPLAYED: "would_replay",
    REPUBLISHED: "would_republish",
    FAILED_AGAIN: "would_fail_again",
    PARKED: "would_park",
}
# Why a DLQ record was not replayed by this run.
OUT_OF_SCOPE, ALREADY_HANDLED, NO_CONTEXT, UNKNOWN_CONNECTOR, FOREIGN_ORIGIN = (
    "out_of_scope",
    "already_handled",
    "no_context",
    "unknown_connector",
    "foreign_origin",
)

GROUP_PREFIX = "crawlstore-dlq-replay."
KAFKA_CONN_ID = "kafka_default"
CHUNK_RECORDS = 500
PROGRESS_EVERY_S = 5.0
RETRY_FOR_S = 600.0
LOCK_WAIT_S = 900.0
READ_STALL_S = 60.0
LOCK_CLASS = "crawlstore.dlq_replay"
# Main topics delete records by timestamp after a week: a record re-published with an older crawl
# time could be gone before the sinks read it, so such records get the replay time instead (the
# item keeps its crawled_at, which is what the sinks order versions by).
REPUBLISH_MAX_AGE = timedelta(milliseconds=WEEK_MS) - timedelta(days=1)
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


# ---------------------------------------------------------------------------- the request


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def error_class_matches(pattern: str, ctx: FailureContext) -> bool:
    """`pattern` (shell wildcards allowed) names the exception class, its short name or the error kind."""
    short = ctx.exception_class.rsplit(".", 1)[-1]
    return any(
        fnmatch.fnmatchcase(name, pattern) for name in (ctx.exception_class, short, ctx.error_kind) if name
    )


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and how; the dlq_replay DAG's params, resolved for one run."""

    run_id: str
    topics: tuple[str, ...] = PIPELINE_TOPICS
    sink: str | None = None  # the failing connector: postgres, opensearch, hdfs or validate
    error_class: str | None = None
    failed_from: datetime | None = None  # failure time, inclusive
    failed_to: datetime | None = None  # failure time, exclusive
    offset_from: int | None = None  # DLQ offsets, both inclusive
    offset_to: int | None = None
    max_records: int | None = None
    rate_limit: float | None = None  # records per second
    dry_run: bool = False
    target: Target = "sink"
    max_replays: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "failed_from", _aware(self.failed_from))
        object.__setattr__(self, "failed_to", _aware(self.failed_to))
        problems = self._name_problems() + self._range_problems()
        if problems:
            raise ValueError("invalid replay request: " + "; ".join(problems))

    def _name_problems(self) -> list[str]:
        problems = [] if self.run_id else ["run_id is empty"]
        if not self.topics:
            problems.append("no topic")
        problems += [
            f"topic {topic!r} is not a pipeline topic name (give `T`, not `T{DLQ_SUFFIX}`)"
            for topic in self.topics
            if not TOPIC_NAME.fullmatch(topic) or topic.endswith((DLQ_SUFFIX, PARKING_SUFFIX))
        ]
        if self.sink is not None and self.sink not in CONNECTORS:
            problems.append(f"sink {self.sink!r} is none of {', '.join(CONNECTORS)}")
        if self.target not in TARGETS:
            problems.append(f"target {self.target!r} is none of {', '.join(TARGETS)}")
        return problems

    def _range_problems(self) -> list[str]:
        checks = [
            (
                bool(self.failed_from and self.failed_to and self.failed_from >= self.failed_to),
                "failed_from is not before failed_to",
            ),
            (self.offset_from is not None and self.offset_from < 0, "offset_from is negative"),
            (
                self.offset_from is not None
                and self.offset_to is not None
                and self.offset_from > self.offset_to,
                "offset_from is above offset_to",
            ),
            (self.max_records is not None and self.max_records < 1, "max_records is below 1"),
            (self.rate_limit is not None and self.rate_limit <= 0, "rate_limit is not positive"),
            (self.max_replays < 1, "max_replays is below 1"),
        ]
        return [problem for failed, problem in checks if failed]

    @property
    def group(self) -> str:
        """The run's own consumer group: a rerun of the same run resumes where it stopped."""
        return GROUP_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", self.run_id)[:200]

    def describe(self) -> str:
        parts = [f"topics {', '.join(self.topics)}", f"target {self.target}"]
        if self.failed_from or self.failed_to:
            start = self.failed_from.isoformat() if self.failed_from else "-inf"
            end = self.failed_to.isoformat() if self.failed_to else "+inf"
            parts.append(f"failed_at in [{start}, {end})")
        if self.offset_from is not None or self.offset_to is not None:
            parts.append(
                f"DLQ offsets {self.offset_from or 0}..{'' if self.offset_to is None else self.offset_to}"
            )
        if self.sink:
            parts.append(f"sink {self.sink}")
        if self.error_class:
            parts.append(f"error class {self.error_class}")
        if self.max_records:
            parts.append(f"at most {self.max_records} records")
        if self.rate_limit:
            parts.append(f"at most {self.rate_limit:g} records/s")
        parts.append(f"parking after {self.max_replays} replays")
        return ", ".join(parts) + (" (DRY RUN)" if self.dry_run else "")

    def out_of_scope(self, offset: int, ctx: FailureContext) -> bool:
        """Whether the filters leave this DLQ record out."""
        if self.sink and ctx.connector != self.sink:
            return True
        if self.error_class and not error_class_matches(self.error_class, ctx):
            return True
        return not (self._offset_in_range(offset) and self._failed_in_window(_aware(ctx.failed_at)))

    def _offset_in_range(self, offset: int) -> bool:
        return (self.offset_from is None or offset >= self.offset_from) and (
            self.offset_to is None or offset <= self.offset_to
        )

    def _failed_in_window(self, failed_at: datetime | None) -> bool:
        if not (self.failed_from or self.failed_to):
            return True
        if failed_at is None:
            return False
        return (self.failed_from is None or failed_at >= self.failed_from) and (
            self.failed_to is None or failed_at < self.failed_to
        )


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return _aware(value)
    return _aware(datetime.fromisoformat(str(value)))


def _number(value: Any, kind: Callable[[Any], T]) -> T | None:
    return None if value in (None, "") else kind(value)


def request_from_params(
    params: Mapping[str, Any],
    *,
    run_id: str,
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
) -> ReplayRequest:
    """The request of one DAG run: explicit params win; scheduled and backfill runs default to
    the failures of their data interval, manual runs to every failure time."""
    failed_from, failed_to = _when(params.get("failed_from")), _when(params.get("failed_to"))
    if failed_from is None and failed_to is None and run_type != "manual":
        if data_interval_start is None or data_interval_end is None:
            # Without an interval a scheduled run would replay every failure ever: refuse.
            raise ValueError(f"{run_type} run {run_id} has no data interval and no failed_from/failed_to")
        failed_from, failed_to = data_interval_start, data_interval_end
    topic = params.get("topic")
    return ReplayRequest(
        run_id=run_id,
        topics=(str(topic),) if topic else PIPELINE_TOPICS,
        sink=params.get("sink") or None,
        error_class=params.get("error_class") or None,
        failed_from=failed_from,
        failed_to=failed_to,
        offset_from=_number(params.get("offset_from"), int),
        offset_to=_number(params.get("offset_to"), int),
        max_records=_number(params.get("max_records"), int),
        rate_limit=_number(params.get("rate_limit"), float),
        dry_run=bool(params.get("dry_run", False)),
        target=params.get("target") or "sink",
        max_replays=_number(params.get("max_replays"), int) or 3,
    )


# ---------------------------------------------------------------------------- the summary


@dataclass
class ReplaySummary:
    """What a run did (or, dry, would do): totals, skips by reason, counts by sink and error class."""

    run_id: str
    group: str | None
    dry_run: bool
    target: str
    scope: str
    scanned: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    by_sink: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_error_class: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    committed: dict[str, int] = field(default_factory=dict)
    restamped: int = 0
    seconds: float = 0.0

    def count(self, letter: Letter, outcome: str) -> None:
        outcome = WOULD[outcome] if self.dry_run else outcome
        self.outcomes[outcome] += 1
        self.by_sink[letter.connector][outcome] += 1
        self.by_error_class[letter.error_class][outcome] += 1

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())

    def totals(self) -> dict[str, int]:
        names = WOULD.values() if self.dry_run else OUTCOMES
        return {name: self.outcomes[name] for name in names} | {"skipped": sum(self.skipped.values())}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the DAG task's XCom)."""
        return {
            "run_id": self.run_id,
            "group": self.group,
            "dry_run": self.dry_run,
            "target": self.target,
            "scope": self.scope,
            "scanned": self.scanned,
            **self.totals(),
            "skipped_by_reason": dict(self.skipped),
            "by_sink": {k: dict(v) for k, v in sorted(self.by_sink.items())},
            "by_error_class": {k: dict(v) for k, v in sorted(self.by_error_class.items())},
            "committed": dict(self.committed),
            "restamped": self.restamped,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        totals = " ".join(f"{k}={v}" for k, v in self.totals().items())
        head = (
            f"replay summary{' (DRY RUN, nothing changed)' if self.dry_run else ''}: {totals} "
            f"(scanned {self.scanned} DLQ records in {self.seconds:.1f}s; run {self.run_id})"
        )
        out = [head]
        if self.skipped:
            out.append("  skipped: " + ", ".join(f"{k}={v}" for k, v in self.skipped.most_common()))
        for label, table in (("sink", self.by_sink), ("error class", self.by_error_class)):
            for name, counts in sorted(table.items()):
                out.append(
                    f"  by {label} {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                )
        if self.restamped:
            out.append(
                f"  {self.restamped} re-published record(s) older than the topic's retention "
                "got the replay time as timestamp"
            )
        if self.committed:
            out.append(
                f"  group {self.group} committed " + ", ".join(f"{k}@{v}" for k, v in self.committed.items())
            )
        return out


# ---------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Letter:
    """A DLQ record in the run's scope and what the run will do with it."""

    record: Record
    context: FailureContext
    origin: str  # the pipeline topic it came from
    action: Action

    @property
    def connector(self) -> str:
        return self.context.connector or "(none)"

    @property
    def error_class(self) -> str:
        return self.context.exception_class or "(none)"

    def ledger_row(self, outcome: str, target: str, run_id: str) -> tuple[Any, ...]:
        ctx, r = self.context, self.record
        return (
            r.topic,
            r.partition,
            r.offset,
            outcome,
            ctx.connector,
            ctx.exception_class,
            ctx.error_kind,
            self.origin,
            ctx.partition,
            ctx.offset,
            ctx.replay_count,
            target,
            run_id,
        )


def _context(record: Record) -> FailureContext | None:
    """The failure context of a dead letter, or None for a record without (a readable) one."""
    if not any(k == H_FAILED_AT for k, _ in record.headers):
        return None
    try:
        return failure_context(record.headers)
    except ValueError:
        return None


@dataclass
class Scoped:
    """A chunk sorted out: the letters to replay, skips by reason, the offset after the chunk."""

    end: int
    letters: list[Letter] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    scanned: int = 0


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


class Ledger:
    """The `dlq_replays` table, and the advisory lock that serialises the replays of one DLQ."""

    def __init__(self, settings: PostgresSettings, run_id: str) -> None:
        self._kwargs = {
            **settings.connect_kwargs(),
            "application_name": f"crawlstore-dlq-replay {run_id}"[:63],
            "connect_timeout": 10,
        }
        self._conn: PgConnection | None = None

    @property
    def conn(self) -> PgConnection:
        # No reconnect: a lost connection loses the advisory lock, so the run must stop (and retry).
        if self._conn is None:
            self._conn = psycopg2.connect(**self._kwargs)
        return self._conn

    def lock(self, dlq: str, wait_s: float = LOCK_WAIT_S) -> None:
        """Hold the lock of `dlq` for this session; waits for a concurrent replay of the same DLQ."""
        deadline, told = time.monotonic() + wait_s, 0.0
        while True:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", (LOCK_CLASS, dlq))
                row = cur.fetchone()
                got = bool(row and row[0])
                holder = None if got else self._holder(cur, dlq)
            self.conn.commit()
            if got:
                return
            if time.monotonic() > deadline:
                raise TransientError(
                    f"{dlq} is being replayed by {holder or 'another run'} for over {wait_s:.0f}s"
                )
            if time.monotonic() - told > 30:
                told = time.monotonic()
                log.info("waiting for %s to finish replaying %s", holder or "another run", dlq)
            time.sleep(2.0)

    @staticmethod
    def _holder(cur: Any, dlq: str) -> str | None:
        cur.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid = hashtext(%s)::oid AND l.objid = hashtext(%s)::oid",
            (LOCK_CLASS, dlq),
        )
        row = cur.fetchone()
        return str(row[0]) if row else None

    def unlock(self, dlq: str) -> None:
        if self._conn is None or self._conn.closed:
            return
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", (LOCK_CLASS, dlq))
        self._conn.commit()

    def check(self) -> None:
        """Fail with the fix when the migration that creates the ledger is missing."""
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1 FROM dlq_replays LIMIT 0")
        except psycopg2.errors.UndefinedTable as exc:
            raise RuntimeError(
                "table dlq_replays is missing: apply sql/ with python -m crawlstore.init"
            ) from exc
        finally:
            self.conn.rollback()

    def handled(self, tp: TopicPartition, offsets: Collection[int]) -> set[int]:
        """The offsets of `tp` some run has already dealt with."""
        if not offsets:
            return set()
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT dlq_offset FROM dlq_replays WHERE dlq_topic = %s AND dlq_partition = %s "
                "AND dlq_offset = ANY(%s)",
                (tp.topic, tp.partition, list(offsets)),
            )
            found = {int(row[0]) for row in cur.fetchall()}
        self.conn.commit()
        return found

    def record(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self.conn.cursor() as cur:
            execute_values(
                cur,
                "INSERT INTO dlq_replays (dlq_topic, dlq_partition, dlq_offset, outcome, connector, "
                "error_class, error_kind, origin_topic, origin_partition, origin_offset, replay_count, "
                "target, run_id) VALUES %s ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO NOTHING",
                rows,
            )
        self.conn.commit()

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()  # also releases any advisory lock still held
        self._conn = None


def _read_hdfs(fs: Any, path: str) -> bytes:
    """A file's content over WebHDFS (OPEN redirects to a DataNode, rewritten as the sink does)."""
    try:
        first = fs.session.get(
            fs.base + quote(path, safe="/"),
            params={"op": "OPEN", "user.name": fs.user},
            timeout=fs.timeout_s,
            allow_redirects=False,
        )
        if first.status_code == 307:
            location = first.headers.get("Location", "")
            if fs.datanode is not None:
                parts = urlsplit(location)
                location = urlunsplit((fs.datanode.scheme, fs.datanode.netloc, parts.path, parts.query, ""))
            first = fs.session.get(location, timeout=fs.timeout_s)
    except requests.RequestException as exc:
        raise TransientError(f"WebHDFS OPEN {path}: {exc}") from exc
    if first.status_code != 200:
        raise TransientError(f"WebHDFS OPEN {path}: HTTP {first.status_code} {first.text[:200]}")
    return bytes(first.content)


class HdfsStoredOffsets:
    """Which DLQ offsets committed HDFS files already hold, read from the files' `kafka` lineage.

    The HDFS sink is the one store where writing a record twice leaves two copies, and its own
    resume rule ("after the newest file") does not fit replays, which write DLQ offsets out of
    order across runs. A file's name bounds the offsets it accounts for; its lines say which ones
    it holds. Only files whose range covers an offset being replayed are read.
    """

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self._files: dict[str, list[tuple[str, Any]]] = {}

    def _listing(self, topic: str) -> list[tuple[str, Any]]:
        from consumers.hdfs_files import DAY_DIR, parse_file_name, topic_dir

        if topic not in self._files:
            base, found = topic_dir(self.sink.root, topic), []
            for day in self.sink.fs.list(base) or []:
                if day.get("type") != "DIRECTORY" or not DAY_DIR.fullmatch(day.get("pathSuffix", "")):
                    continue
                folder = f"{base}/{day['pathSuffix']}"
                for entry in self.sink.fs.list(folder) or []:
                    parsed = parse_file_name(entry.get("pathSuffix", ""))
                    if parsed is not None and parsed.topic == topic:
                        found.append((f"{folder}/{entry['pathSuffix']}", parsed))
            self._files[topic] = found
        return self._files[topic]

    def stored(self, tp: TopicPartition, offsets: Collection[int]) -> set[int]:
        wanted, lookup = sorted(offsets), set(offsets)
        found: set[int] = set()
        for path, committed in self._listing(tp.topic):
            i = bisect.bisect_left(wanted, committed.first)
            if committed.partition != tp.partition or i == len(wanted) or wanted[i] > committed.last:
                continue
            for line in _read_hdfs(self.sink.fs, path).splitlines():
                lineage = json.loads(line).get("kafka") or {}
                if lineage.get("partition") == tp.partition and lineage.get("offset") in lookup:
                    found.add(int(lineage["offset"]))
        return found


class SinkWriter:
    """The sink a dead letter failed in, driven through its lifecycle; transient errors retried."""

    def __init__(
        self, sink: SinkTask, retry_for_s: float = RETRY_FOR_S, stop: threading.Event | None = None
    ) -> None:
        from consumers.hdfs import HdfsSink

        self.sink = sink
        self.retry_for_s = retry_for_s
        self.stopping = stop or threading.Event()
        self.started = False
        self.opened: set[TopicPartition] = set()
        self.hdfs = HdfsStoredOffsets(sink) if isinstance(sink, HdfsSink) else None

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        backoff, deadline = Backoff(0.5, 15.0), time.monotonic() + self.retry_for_s
        while True:
            try:
                return call()
            except TransientError as exc:
                self._abort()
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    raise TransientError(
                        f"{self.sink.name} {what}: still failing after {self.retry_for_s:.0f}s: {exc}"
                    ) from exc
                log.warning(
                    "%s %s failed, retry #%d in %.1fs: %s", self.sink.name, what, backoff.attempts, delay, exc
                )
                if self.stopping.wait(delay):
                    raise ReplayStopped(f"{self.sink.name} {what}: stopped while waiting to retry") from exc

    def _abort(self) -> None:
        try:
            self.sink.abort()
        except Exception:
            log.exception(
                "%s: abort failed (staged data is cleaned up when the partition is opened again)",
                self.sink.name,
            )

    def open(self, tp: TopicPartition) -> None:
        if not self.started:
            self._retrying("start", self.sink.start)
            self.started = True
        if tp in self.opened:
            return
        # open() lets the sink take the partition over (HDFS deletes what a killed replay left in
        # its temp folder); its resume offset does not apply to a replay, which writes DLQ offsets
        # out of order across runs, so close() makes the sink forget it (the HDFS sink would
        # otherwise skip every offset below its newest file). The ledger decides what to write.
        self._retrying("open", lambda: self.sink.open([tp], {}))
        self.sink.close([tp])
        self.opened.add(tp)

    def already_stored(self, tp: TopicPartition, offsets: Collection[int]) -> set[int]:
        hdfs = self.hdfs
        if hdfs is None or not offsets:
            return set()  # PostgreSQL and OpenSearch ignore a record they hold already
        return self._retrying("reading committed files", lambda: hdfs.stored(tp, offsets))

    def write(self, batch: Batch, dead_letter: Callable[[list[Rejection]], None]) -> list[Rejection]:
        """put → dead letters of what still fails → flush; returns what still fails."""
        failures: dict[tuple[str, int, int], Rejection] = {}
        sent: set[tuple[str, int, int]] = set()

        def attempt() -> None:
            for rejection in [*batch.rejected, *self.sink.put(batch)]:
                failures.setdefault(rejection.source, rejection)
            todo = [r for r in failures.values() if r.source not in sent]  # a retry does not resend
            dead_letter(todo)
            sent.update(r.source for r in todo)
            self.sink.flush(batch)

        try:
            self._retrying("write", attempt)
        except BaseException:
            self._abort()
            raise
        return list(failures.values())

    def stop(self) -> None:
        try:
            if self.opened:
                self.sink.close(sorted(self.opened))
        finally:
            self.sink.stop()


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
        from consumers.runtime import to_record

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


# ---------------------------------------------------------------------------- the run


def pipeline_producer() -> Any:
    """The provider's Kafka hook with idempotence enforced (connection `kafka_default`)."""
    from crawlstore.publish import PipelineProducerHook

    return PipelineProducerHook(kafka_config_id=KAFKA_CONN_ID).get_producer()


def build_replay_sink(connector: str, group: str) -> SinkTask:
    """The connector's sink with its settings from the environment, bookkeeping under `group`."""
    from consumers.__main__ import build_sink
    from consumers.settings import ConsumerSettings, resolve

    return build_sink(replace(resolve(connector, ConsumerSettings()), group=group))


def reader_config(group: str | None) -> dict[str, Any]:
    """The consumers' Kafka settings, with the run's group (None for a dry run: it commits nothing)."""
    from consumers.kafka_config import consumer_config
    from consumers.settings import ConsumerSettings, resolve
    from crawlstore.settings import KafkaSettings

    # Any sink's RuntimeConfig carries the settings the one config builder needs.
    runtime = replace(resolve("postgres", ConsumerSettings()), sink="dlq-replay", group=group or "")
    return {**consumer_config(KafkaSettings(), runtime), "group_id": group, "max_poll_records": CHUNK_RECORDS}


class ReplayStopped(Exception):
    """The run was asked to stop (SIGTERM) and did, after its last durable chunk."""


@contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """An event SIGTERM sets, so a replay stops after its current chunk instead of mid-write.

    Airflow's own handler (it calls the operator's on_kill) still runs; Airflow kills the process
    a few seconds after SIGTERM anyway, and a run killed at any point is safe to rerun.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping after the current chunk")
        stop.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """One replay: the topics' DLQs, chunk by chunk; sinks, producer and ledger shared."""

    def __init__(
        self,
        *,
        request: ReplayRequest,
        summary: ReplaySummary,
        reader: DlqReader,
        ledger: Ledger,
        producer: Callable[[], Any],
        build_sink: Callable[[str, str], SinkTask],
        stop: threading.Event,
    ) -> None:
        self.request = request
        self.stop = stop
        self.summary = summary
        self.reader = reader
        self.ledger = ledger
        self._producer_factory = producer
        self._producer: Any = None
        self.build_sink = build_sink
        self.writers: dict[str, SinkWriter] = {}
        self.limiter = RateLimiter(request.rate_limit, sleep=stop.wait)
        self.chunk = max(1, min(CHUNK_RECORDS, int(request.rate_limit or CHUNK_RECORDS)))
        self.limit_reached = False
        self.partitions: dict[str, list[TopicPartition]] = {}
        self.bounds: dict[TopicPartition, tuple[int, int]] = {}
        self._last_progress = time.monotonic()
        self._started = time.monotonic()

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = self._producer_factory()
        return self._producer

    def produce(self, records: list[OutgoingRecord]) -> None:
        from crawlstore.publish import produce_all

        if records:
            produce_all(self.producer, records)

    # -- topics and partitions

    def snapshot(self) -> None:
        """The DLQs' offsets now: the run handles what was there when it started, nothing later
        (not the records it sends back itself, nor those a run it waits for sends back)."""
        for origin in self.request.topics:
            tps = self.reader.partitions(dlq_topic(origin))
            self.bounds.update(self.reader.bounds(tps))
            self.partitions[origin] = tps

    def topic(self, origin: str) -> None:
        dlq = dlq_topic(origin)
        if not self.request.dry_run:
            from crawlstore.publish import check_topics

            check_topics(self.producer, [origin, dlq, parking_topic(origin)])
            self.ledger.lock(dlq)
        try:
            for tp in self.partitions[origin]:
                first, end = self.bounds[tp]
                start = max(first, self.request.offset_from or 0, self.reader.committed(tp) or 0)
                self.partition(origin, tp, start, end)
                if self.limit_reached:
                    return
        finally:
            if not self.request.dry_run:
                self.ledger.unlock(dlq)

    def partition(self, origin: str, tp: TopicPartition, start: int, end: int) -> None:
        where = f"{tp.topic}[{tp.partition}]"
        if self.request.offset_to is not None:
            end = min(end, self.request.offset_to + 1)
        if start >= end:
            log.info("%s: nothing to read (from offset %d, end %d)", where, start, end)
            return
        log.info("%s: reading offsets %d..%d (%d records)", where, start, end - 1, end - start)
        for records in self.reader.chunks(tp, start, end, self.chunk):
            scoped = self._in_scope(origin, tp, records)
            if scoped.letters:
                self.limiter.acquire(len(scoped.letters))
                self._check_stop(where, records[0].offset)  # this chunk is not handled: resume at it
                (self._plan if self.request.dry_run else self._handle)(origin, tp, scoped.letters)
            # Counted once dealt with, so a stopped run does not report a chunk it left alone.
            self.summary.scanned += scoped.scanned
            self.summary.skipped.update(scoped.skipped)
            position = scoped.end
            self._commit(tp, position)
            self._check_stop(where, position)
            self._progress(where, position, start, end)
            if self.limit_reached:
                log.info(
                    "%s: max_records=%d reached at offset %d", where, self.request.max_records, position - 1
                )
                return
        self._commit(tp, end)

    def _check_stop(self, where: str, resume_at: int) -> None:
        if self.stop.is_set():
            raise ReplayStopped(
                f"stopped on request; everything before {where}@{resume_at} is done, "
                "a rerun with the same run id continues there"
            )

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        if self.request.dry_run:
            return
        if self.summary.committed.get(f"{tp.topic}[{tp.partition}]", -1) < offset:
            self.reader.commit(tp, offset)
            self.summary.committed[f"{tp.topic}[{tp.partition}]"] = offset

    def _progress(self, where: str, position: int, start: int, end: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        s = self.summary
        done = position - start
        log.info(
            "progress %s@%d: scanned %d/%d (%.0f%%), %s; %.1f records/s, %d left to scan",
            where,
            position,
            done,
            end - start,
            100.0 * done / max(1, end - start),
            " ".join(f"{k}={v}" for k, v in s.totals().items()),
            s.handled / max(1e-9, now - self._started),
            end - position,
        )

    # -- which records

    def _classify(self, origin: str, record: Record) -> Letter | str:
        """The letter to replay, or why the record is skipped."""
        ctx = _context(record)
        if ctx is None:
            return NO_CONTEXT
        if ctx.topic != origin:
            return FOREIGN_ORIGIN  # the headers point elsewhere: never route a record by them
        if self.request.out_of_scope(record.offset, ctx):
            return OUT_OF_SCOPE
        action = ACTIONS.get(ctx.connector) if self.request.target == "sink" else "republish"
        return UNKNOWN_CONNECTOR if action is None else Letter(record, ctx, origin, action)

    def _in_scope(self, origin: str, tp: TopicPartition, records: list[Record]) -> Scoped:
        """The chunk's letters to replay, why the others are skipped, and where the chunk ends."""
        classified = [(r, self._classify(origin, r)) for r in records]
        handled = self.ledger.handled(tp, [r.offset for r, c in classified if isinstance(c, Letter)])
        scoped = Scoped(records[-1].offset + 1)
        room = None if self.request.max_records is None else self.request.max_records - self.summary.handled
        for record, verdict in classified:
            if room is not None and len(scoped.letters) >= room:
                self.limit_reached = True
                scoped.end = record.offset
                return scoped
            scoped.scanned += 1
            if isinstance(verdict, str):
                scoped.skipped[verdict] += 1
            elif record.offset in handled:
                scoped.skipped[ALREADY_HANDLED] += 1
            else:
                scoped.letters.append(verdict)
        if room is not None and len(scoped.letters) >= room:
            self.limit_reached = True
        return scoped

    # -- what happens to them

    def _again(
        self, letter: Letter, connector: str, stage: str, error: BaseException
    ) -> tuple[OutgoingRecord, str]:
        """The dead letter of a replay that failed again: back to the DLQ, or parked at the limit."""
        replayed = replace(letter.record, headers=tuple(replay_headers(letter.record.headers)))
        out = dead_letter(replayed, connector=connector, stage=stage, error=error)
        if letter.context.replay_count + 1 >= self.request.max_replays:
            return replace(out, topic=parking_topic(letter.origin)), PARKED
        return out, FAILED_AGAIN

    def _stamp(self, timestamp_ms: int | None) -> int | None:
        now = datetime.now(UTC)
        if timestamp_ms is not None and timestamp_ms < (now - REPUBLISH_MAX_AGE).timestamp() * 1000:
            self.summary.restamped += 1
            return int(now.timestamp() * 1000)
        return timestamp_ms

    def _republished(self, letter: Letter) -> OutgoingRecord:
        """The DLQ record as it was on its topic, replay count increased."""
        r = letter.record
        return OutgoingRecord(
            letter.origin, r.key, r.value, self._stamp(r.timestamp_ms), replay_headers(r.headers)
        )

    def _validated(self, letter: Letter, item: Any) -> OutgoingRecord:
        """A message as the publish task makes it, plus the failure context (replay count increased),
        so a later failure in a sink keeps counting replays and parks the record eventually."""
        message = encode_item(item, letter.origin, letter.record.header(H_RUN_ID) or self.request.run_id)
        context = [(k, v) for k, v in replay_headers(letter.record.headers) if k.startswith((PREFIX, OURS))]
        return replace(
            message, timestamp_ms=self._stamp(message.timestamp_ms), headers=message.headers + context
        )

    @staticmethod
    def _decode(letter: Letter) -> Any:
        try:
            return decode_item(letter.record)
        except RecordRejected:
            raise
        except Exception as exc:  # e.g. RecursionError on absurdly nested JSON: still the record's fault
            raise RecordRejected("undecodable", f"{type(exc).__name__}: {exc}") from exc

    def _plan(self, origin: str, tp: TopicPartition, letters: list[Letter]) -> None:
        """Dry run: what each letter would become; only decoding is tried, nothing is written."""
        for letter in letters:
            if letter.action == "republish":
                self.summary.count(letter, REPUBLISHED)
                continue
            try:
                self._decode(letter)
            except RecordRejected:
                last = letter.context.replay_count + 1 >= self.request.max_replays
                self.summary.count(letter, PARKED if last else FAILED_AGAIN)
                continue
            self.summary.count(letter, REPUBLISHED if letter.action == "validate" else REPLAYED)

    def _handle(self, origin: str, tp: TopicPartition, letters: list[Letter]) -> None:
        outcomes: dict[int, str] = {}
        by_connector: defaultdict[str, list[Letter]] = defaultdict(list)
        for letter in letters:
            if letter.action == "sink":
                by_connector[letter.context.connector].append(letter)
        for connector, group in by_connector.items():
            outcomes.update(self._to_sink(connector, tp, group))
        outcomes.update(self._to_topic([x for x in letters if x.action != "sink"]))
        # Only now is every outcome durable (stored, or acknowledged by Kafka): write them down.
        self.ledger.record(
            [
                x.ledger_row(outcomes[x.record.offset], self.request.target, self.request.run_id)
                for x in letters
            ]
        )
        for letter in letters:
            self.summary.count(letter, outcomes[letter.record.offset])

    def _writer(self, connector: str) -> SinkWriter:
        if connector not in self.writers:
            self.writers[connector] = SinkWriter(
                self.build_sink(connector, self.request.group), stop=self.stop
            )
        return self.writers[connector]

    def _to_sink(self, connector: str, tp: TopicPartition, letters: list[Letter]) -> dict[int, str]:
        writer = self._writer(connector)
        writer.open(tp)
        outcomes: dict[int, str] = {}
        earlier = writer.already_stored(tp, [x.record.offset for x in letters])
        if earlier:
            log.info(
                "%s: %d record(s) of %s[%d] were stored by an earlier attempt of a replay",
                connector,
                len(earlier),
                tp.topic,
                tp.partition,
            )
        by_offset = {x.record.offset: x for x in letters}
        batch, now = Batch(), time.monotonic()
        for letter in letters:
            if letter.record.offset in earlier:
                outcomes[letter.record.offset] = REPLAYED
                continue
            try:
                batch.add_item(Decoded(letter.record, self._decode(letter)), now)
            except RecordRejected as exc:
                batch.add_rejected(Rejection(letter.record, exc, STAGE_DESERIALIZE), now)
        if not len(batch):
            return outcomes

        def dead_letter_all(rejections: list[Rejection]) -> None:
            again = [self._again(by_offset[r.record.offset], connector, r.stage, r.error) for r in rejections]
            self.produce([out for out, _ in again])
            for rejection, (out, outcome) in zip(rejections, again, strict=True):
                outcomes[rejection.record.offset] = outcome
                log.warning(
                    "%s: %s failed again in %s (%s): to %s",
                    rejection.record.where,
                    connector,
                    rejection.stage,
                    str(rejection.error)[:200],
                    out.topic,
                )

        writer.write(batch, dead_letter_all)
        for decoded in batch.items:
            outcomes.setdefault(decoded.record.offset, REPLAYED)
        return outcomes

    def _to_topic(self, letters: list[Letter]) -> dict[int, str]:
        outgoing: list[OutgoingRecord] = []
        outcomes: dict[int, str] = {}
        for letter in letters:
            if letter.action == "republish":
                out, outcome = self._republished(letter), REPUBLISHED
            else:
                try:
                    out, outcome = self._validated(letter, self._decode(letter)), REPUBLISHED
                except RecordRejected as exc:
                    out, outcome = self._again(letter, VALIDATE, STAGE_VALIDATE, exc)
                    log.warning(
                        "%s: still invalid (%s: %s): to %s",
                        letter.record.where,
                        exc.kind,
                        str(exc)[:200],
                        out.topic,
                    )
            outgoing.append(out)
            outcomes[letter.record.offset] = outcome
        self.produce(outgoing)
        return outcomes

    def close(self) -> None:
        for connector, writer in self.writers.items():
            try:
                writer.stop()
            except Exception:
                log.exception("stopping the %s sink failed", connector)
        if self._producer is not None:
            self._producer.flush(30)


def replay(
    request: ReplayRequest,
    *,
    producer: Callable[[], Any] = pipeline_producer,
    build_sink: Callable[[str, str], SinkTask] = build_replay_sink,
    postgres: PostgresSettings | None = None,
    kafka_config: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Replay the DLQ records `request` selects; logs progress and a summary, returns the summary.

    Setting `stop` ends the run after its current chunk with ReplayStopped.
    """
    group = None if request.dry_run else request.group
    summary = ReplaySummary(request.run_id, group, request.dry_run, request.target, request.describe())
    log.info(
        "DLQ replay %s: %s%s", request.run_id, summary.scope, f"; consumer group {group}" if group else ""
    )
    started = time.monotonic()
    ledger = Ledger(postgres or PostgresSettings(), request.run_id)
    reader = DlqReader(kafka_config if kafka_config is not None else reader_config(group))
    run = _Run(
        request=request,
        summary=summary,
        reader=reader,
        ledger=ledger,
        producer=producer,
        build_sink=build_sink,
        stop=stop or threading.Event(),
    )
    try:
        ledger.check()
        run.snapshot()
        for topic in request.topics:
            run.topic(topic)
            if run.limit_reached:
                break
    finally:
        try:
            run.close()
        finally:
            reader.close()
            ledger.close()
            summary.seconds = time.monotonic() - started
            for line in summary.lines():  # a failed or stopped run reports what it did, too
                log.info("%s", line)
    return summary


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`python -m consumers.replay`: the DAG's replay from a shell (same ledger, same rules)."""
    parser = argparse.ArgumentParser(
        prog="python -m consumers.replay",
        description="Replay dead letters into the sink they failed in, or onto their original topic.",
    )
    parser.add_argument("--run-id", required=True, help="names the run; a rerun with the same id resumes it")
    parser.add_argument("--topic", action="append", help="pipeline topic (repeatable; default: all)")
    parser.add_argument("--sink", choices=CONNECTORS, help="only records that failed in this sink/stage")
    parser.add_argument(
        "--error-class", help="exception class, short class name or error kind (wildcards ok)"
    )
    parser.add_argument(
        "--failed-from", type=datetime.fromisoformat, help="failure time from (ISO, inclusive)"
    )
    parser.add_argument("--failed-to", type=datetime.fromisoformat, help="failure time to (ISO, exclusive)")
    parser.add_argument("--offset-from", type=int, help="first DLQ offset")
    parser.add_argument("--offset-to", type=int, help="last DLQ offset (inclusive)")
    parser.add_argument("--max-records", type=int)
    parser.add_argument("--rate-limit", type=float, help="records per second")
    parser.add_argument("--target", choices=TARGETS, default="sink")
    parser.add_argument("--max-replays", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for chatty in ("kafka", "opensearch", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    request = ReplayRequest(
        run_id=args.run_id,
        topics=tuple(args.topic or PIPELINE_TOPICS),
        sink=args.sink,
        error_class=args.error_class,
        failed_from=args.failed_from,
        failed_to=args.failed_to,
        offset_from=args.offset_from,
        offset_to=args.offset_to,
        max_records=args.max_records,
        rate_limit=args.rate_limit,
        dry_run=args.dry_run,
        target=args.target,
        max_replays=args.max_replays,
    )
    with stop_on_sigterm() as stop:
        try:
            summary = replay(request, stop=stop)
        except ReplayStopped as exc:
            log.warning("%s", exc)
            return 3
    # One line, last on stdout: the Airflow hook routes logging to stdout once it is imported.
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

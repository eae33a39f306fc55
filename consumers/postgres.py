"""PostgreSQL sink: batched upsert on the natural key, offsets in the same transaction.

Exactly-once landing: put() upserts the batch inside an open transaction, flush() writes the
batch's next offsets to kafka_offsets and commits, so rows and offsets land together or not at
all. On assignment the consumer seeks to kafka_offsets (the source of truth; Kafka's committed
offsets only serve lag monitoring). Fencing: opening a partition takes the next `owner_epoch` of
its kafka_offsets row, and a flush updates the row only under the epoch it opened with; a consumer
that lost the partition meanwhile (frozen past its session) finds another epoch, rolls back and is
Fenced. The stale-write guard (`WHERE (crawled_at, kafka_offset) >
...`) makes a replayed or older record a no-op, so a crash between commit and anything after it
only causes harmless re-reads.

Fast path: the batch's rows are COPYed into a session temp table and merged with one
`INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT ... WHERE <guard>` (values travel as COPY data,
never as SQL text); about twice as fast per row as a multi-row VALUES statement. If PostgreSQL
refuses anything in the COPY or the merge, the batch falls back to `execute_values` statements,
bisected under savepoints down to the rows it refuses (a value out of a column's range, a NUL
character); only those records go to the DLQ.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from kafka.structs import TopicPartition
from psycopg2.extensions import connection as PgConnection
from psycopg2.extensions import cursor as PgCursor
from psycopg2.extras import execute_values

from consumers.batching import Batch, Decoded, Rejection
from consumers.errors import FatalError, Fenced, StoreRejected, TransientError
from consumers.postgres_schema import TableSpec, prepare_tables
from consumers.sink import SinkTask
from crawlstore.config import KindSpec, current
from crawlstore.dlq import STAGE_SINK
from crawlstore.settings import PostgresSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Statement:
    """A table's upsert, rendered for one connection."""

    spec: TableSpec
    query: str
    template: str


UPSERT_OFFSETS = (
    "INSERT INTO kafka_offsets AS o "
    "(consumer_group, topic, kafka_partition, next_offset, topic_id, owner_epoch) "
    "VALUES %s ON CONFLICT (consumer_group, topic, kafka_partition) "
    "DO UPDATE SET next_offset = EXCLUDED.next_offset, topic_id = EXCLUDED.topic_id, updated_at = now() "
    "WHERE o.owner_epoch = EXCLUDED.owner_epoch RETURNING topic, kafka_partition"
)
CLAIM_OFFSETS = (
    "INSERT INTO kafka_offsets AS o (consumer_group, topic, kafka_partition, next_offset, owner_epoch) "
    "SELECT %s, t, p, NULL, 1 FROM unnest(%s::text[], %s::int[]) AS u(t, p) "
    "ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE SET owner_epoch = o.owner_epoch + 1 "
    "RETURNING topic, kafka_partition, next_offset, topic_id, owner_epoch"
)

# Errors of the connection or the server's state: retry. Errors of the statement's data: bisect.
TRANSIENT = (psycopg2.OperationalError, psycopg2.InterfaceError)
ROW_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, ValueError)


def row_values(spec: TableSpec, decoded: Decoded) -> tuple[Any, ...]:
    item, record = decoded.item, decoded.record
    raw = record.value.decode("utf-8") if record.value is not None else "null"
    typed = tuple(getattr(item, c) for c in spec.columns)
    if spec.json_columns:  # lists and objects go to jsonb columns as JSON text
        typed = tuple(
            json.dumps(v, ensure_ascii=False) if i in spec.json_columns and v is not None else v
            for i, v in enumerate(typed)
        )
    return (*typed, raw, record.topic, record.partition, record.offset)


def _copy_field(value: Any) -> str:
    """One value in COPY's text format; NUL cannot be expressed and makes the COPY fail (fallback)."""
    if value is None:
        return "\\N"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def copy_text(spec: TableSpec, rows: Sequence[Decoded]) -> str:
    return "".join("\t".join(map(_copy_field, row_values(spec, d))) + "\n" for d in rows)


def rounds(rows: Sequence[Decoded]) -> list[list[Decoded]]:
    """Split rows so no key appears twice in one statement (ON CONFLICT cannot touch a row twice).

    The stale-write guard makes the order of rounds irrelevant: whatever the order, the row ends
    up as the newest (crawled_at, offset) of the rows PostgreSQL accepted.
    """
    by_key: dict[str, list[Decoded]] = defaultdict(list)
    for row in rows:
        by_key[row.item.key].append(row)
    depth = max((len(v) for v in by_key.values()), default=0)
    return [[v[i] for v in by_key.values() if len(v) > i] for i in range(depth)]


class PostgresSink(SinkTask):
    name = "postgres"

    def __init__(
        self,
        settings: PostgresSettings,
        group: str,
        connect: Callable[..., PgConnection] = psycopg2.connect,
        kinds: Iterable[KindSpec] | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.kinds = list(current().kinds.values() if kinds is None else kinds)
        self.tables = {kind.kind: TableSpec.for_kind(kind) for kind in self.kinds}
        self._connect = connect
        self._conn: PgConnection | None = None
        self._staged = False
        self.topic_ids: dict[str, str] = {}  # of the topics opened, stored beside their offsets
        self.epochs: dict[TopicPartition, int] = {}  # the owner_epoch each opened partition took

    # -- connection

    def _connection(self) -> PgConnection:
        if self._conn is None or self._conn.closed:
            kwargs = {
                **self.settings.connect_kwargs(),
                "application_name": f"crawlstore-{self.name}-sink",
                "connect_timeout": 5,
                # A lock or a stuck server must surface as an error we can retry, not a hang.
                # A consumer frozen inside a transaction must not hold its row locks for ever.
                "options": "-c statement_timeout=60000 -c lock_timeout=30000 "
                "-c idle_in_transaction_session_timeout=60000",
            }
            try:
                conn = self._connect(**kwargs)
            except TRANSIENT as exc:
                raise TransientError(f"PostgreSQL unreachable: {str(exc).strip()}") from exc
            try:
                with conn.cursor() as cur:
                    for change in prepare_tables(cur, self.kinds):
                        log.info("schema: %s", change)
                    for spec in self.tables.values():
                        cur.execute(spec.create_stage())
                conn.commit()
            except FatalError:
                conn.close()
                raise
            except psycopg2.Error as exc:
                conn.close()
                raise self._fail(exc, "preparing the tables") from exc
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None
        self._staged = False

    def _fail(self, exc: Exception, doing: str) -> TransientError | FatalError:
        """Classify an error raised outside the per-row bisection."""
        if isinstance(exc, TRANSIENT):
            self._drop_connection()
            return TransientError(f"PostgreSQL {doing}: {str(exc).strip()}")
        # Missing table, permission, syntax: no retry and no dead letter can fix these.
        return FatalError(
            f"PostgreSQL {doing}: {type(exc).__name__}: {str(exc).strip()} (are the sql/ migrations applied?)"
        )

    # -- lifecycle

    def start(self) -> None:
        try:
            with self._connection().cursor() as cur:
                cur.execute("SELECT count(*) FROM kafka_offsets WHERE consumer_group = %s", (self.group,))
            self._connection().rollback()
        except psycopg2.Error as exc:
            raise self._fail(exc, "start") from exc
        log.info(
            "postgres sink ready (group %s, tables %s)",
            self.group,
            ", ".join(s.table for s in self.tables.values()),
        )

    def open(
        self,
        partitions: Collection[TopicPartition],
        committed: Mapping[TopicPartition, int | None],
        topic_ids: Mapping[str, str] | None = None,
    ) -> dict[TopicPartition, int]:
        tps = list(partitions)
        self.topic_ids.update(topic_ids or {})
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                cur.execute(
                    CLAIM_OFFSETS, (self.group, [tp.topic for tp in tps], [tp.partition for tp in tps])
                )
                rows = cur.fetchall()
            conn.commit()
        except psycopg2.Error as exc:
            raise self._fail(exc, "claiming kafka_offsets") from exc
        stored: dict[TopicPartition, int] = {}
        for t, p, o, old_id, epoch in rows:
            self.epochs[TopicPartition(t, p)] = int(epoch)
            if o is None:
                continue  # claimed now, nothing stored yet
            stored[TopicPartition(t, p)] = int(o)
            new_id = self.topic_ids.get(t)
            if old_id is not None and new_id is not None and old_id != new_id:
                log.warning(
                    "TOPIC RE-CREATED: %s[%d] has id %s, kafka_offsets were stored for id %s (at %d): "
                    "reading the new log from its start",
                    t,
                    p,
                    new_id,
                    old_id,
                    o,
                )
                stored[TopicPartition(t, p)] = 0
        for tp in tps:
            if tp in stored and committed.get(tp) not in (None, stored[tp]):
                log.info(
                    "%s[%d]: kafka_offsets says %d, Kafka says %s; kafka_offsets wins",
                    tp.topic,
                    tp.partition,
                    stored[tp],
                    committed.get(tp),
                )
        return stored

    def encode(self, items: Sequence[Decoded]) -> dict[TableSpec, tuple[list[Decoded], str]]:
        """Per table: its rows, and their COPY text."""
        by_table: dict[TableSpec, list[Decoded]] = defaultdict(list)
        for decoded in items:
            by_table[self.tables[decoded.item.kind]].append(decoded)
        return {spec: (rows, copy_text(spec, rows)) for spec, rows in by_table.items()}

    def prepare(self, batch: Batch) -> None:
        batch.prepared = self.encode(batch.items)

    def put(self, batch: Batch) -> list[Rejection]:
        conn = self._connection()
        refused: list[Rejection] = []
        tables = batch.prepared if batch.prepared is not None else self.encode(batch.items)
        try:
            with conn.cursor() as cur:
                self._staged = True
                try:
                    for spec, (_, data) in tables.items():
                        # One read of the whole buffer: psycopg2 reads `size` chars per GIL
                        # acquisition, and a writer thread that re-acquires the GIL per 8 KB chunk
                        # starves behind the decoder.
                        cur.copy_expert(spec.copy(), io.StringIO(data), size=len(data) + 1)
                        cur.execute(spec.merge())  # staged once per transaction; commit empties it
                except ROW_ERRORS as exc:
                    # No savepoint on the fast path (two round trips a batch): the whole batch
                    # goes again, one statement at a time, halving down to the refused rows.
                    conn.rollback()
                    log.info(
                        "COPY of %d rows refused (%s); finding the rows one statement at a time",
                        len(batch.items),
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    )
                    for spec, (rows, _) in tables.items():
                        statement = Statement(spec, spec.upsert().as_string(conn), spec.template())
                        for chunk in rounds(rows):
                            self._upsert(cur, statement, chunk, refused)
        except psycopg2.Error as exc:
            raise self._fail(exc, "upsert") from exc
        return refused

    def _upsert(
        self, cur: PgCursor, statement: Statement, rows: list[Decoded], refused: list[Rejection]
    ) -> None:
        """One statement for the rows; on a data error, halve under savepoints down to the bad rows."""
        if not rows:
            return
        values = [row_values(statement.spec, d) for d in rows]
        # Each call rolls back to or releases its own savepoint before recursing, so one name does.
        cur.execute("SAVEPOINT crawlstore_rows")
        try:
            execute_values(cur, statement.query, values, template=statement.template, page_size=len(values))
        except ROW_ERRORS as exc:
            cur.execute("ROLLBACK TO SAVEPOINT crawlstore_rows")
            if len(rows) == 1:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                kind = getattr(exc, "pgcode", None) or type(exc).__name__
                log.warning("%s: PostgreSQL refused the row (%s): to the DLQ", rows[0].record.where, detail)
                refused.append(
                    Rejection(rows[0].record, StoreRejected(f"postgres_{kind}", detail), STAGE_SINK)
                )
                return
            middle = len(rows) // 2
            self._upsert(cur, statement, rows[:middle], refused)
            self._upsert(cur, statement, rows[middle:], refused)
            return
        cur.execute("RELEASE SAVEPOINT crawlstore_rows")

    def flush(self, batch: Batch) -> None:
        conn = self._connection()
        nexts = batch.next_offsets()
        offsets = [
            (self.group, tp.topic, tp.partition, nxt, self.topic_ids.get(tp.topic), self.epochs.get(tp, 0))
            for tp, nxt in sorted(nexts.items())
        ]
        try:
            with conn.cursor() as cur:
                kept = {(t, p) for t, p in execute_values(cur, UPSERT_OFFSETS, offsets, fetch=True)}
            lost = [tp for tp in nexts if (tp.topic, tp.partition) not in kept]
            if lost:
                conn.rollback()
                raise Fenced(
                    lost,
                    ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(lost))
                    + ": opened by another consumer since (its kafka_offsets row has another owner_epoch); "
                    "nothing of the batch was committed",
                )
            conn.commit()
        except psycopg2.Error as exc:
            # A commit that failed on the wire may still have happened: the retry is a no-op then.
            raise self._fail(exc, "commit") from exc
        finally:
            self._staged = False

    def abort(self) -> None:
        if self._conn is not None and not self._conn.closed and self._staged:
            try:
                self._conn.rollback()
            except psycopg2.Error:
                self._drop_connection()
        self._staged = False

    def close(self, partitions: Collection[TopicPartition]) -> None:
        self.abort()
        for tp in partitions:
            self.epochs.pop(tp, None)

    def stop(self) -> None:
        self.abort()
        self._drop_connection()

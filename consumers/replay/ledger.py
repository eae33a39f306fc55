"""The `dlq_replays` ledger: every DLQ offset some run has dealt with, and the advisory lock
that serialises the replays of one DLQ."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg2
from kafka.structs import TopicPartition
from psycopg2.extensions import connection as PgConnection
from psycopg2.extras import execute_values

from consumers.errors import TransientError
from crawlstore.settings import PostgresSettings

log = logging.getLogger(__name__)
LOCK_WAIT_S = 900.0
LOCK_CLASS = "crawlstore.dlq_replay"


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

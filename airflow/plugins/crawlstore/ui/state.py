"""The pipeline's state as the Pipeline page shows it, gathered from where it is true.

- Kafka: each topic's end offsets, and each sink's consumer group (its committed offsets, so its
  lag, its state and members). A sink's recent rate is how fast its committed offsets moved over
  the last minute of refreshes.
- The consumers' own `/health` and `/metrics` (PageSettings.consumers).
- The dead-letter and parking topics (crawlstore.ui.letters), and the replay ledger in
  PostgreSQL (`dlq_replays`): which dead letters a dlq_replay run has dealt with already.

Every part that cannot be reached says so in `errors` and leaves the others intact; every call
to a service is bounded, so a service that is away costs a refresh seconds, never a hang.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg2
import requests
from kafka import KafkaAdminClient, TopicPartition

from crawlstore.connectors import SINKS, consumer_group
from crawlstore.settings import KafkaSettings, PageSettings, PostgresSettings
from crawlstore.sources import SOURCES
from crawlstore.topics import dlq_topic, parking_topic, pipeline_topics
from crawlstore.ui.letters import CLIENT_ID, UNKNOWN, LetterReader

log = logging.getLogger(__name__)
FRESH_S = 2.0  # a snapshot younger than this is served again
BUSY_WAIT_S = 1.0  # a request that finds a refresh under way waits this long, then gets the last one
RATE_WINDOW_S = 60.0
DLQ_BUDGET_S = 3.0  # reading dead letters per refresh, over all DLQ topics
HTTP_TIMEOUT_S = 2.0
KAFKA_TIMEOUT_MS = 5_000
METRICS = {
    "crawlstore_consumer_records_per_second": "rate",
    "crawlstore_consumer_records_written_total": "written",
    "crawlstore_consumer_records_dead_lettered_total": "dead_lettered",
    "crawlstore_consumer_retries_total": "retries",
}
HEALTH_FIELDS = ("status", "state", "assigned_partitions", "detail")


def parse_metrics(text: str) -> dict[str, float]:
    """The page's few numbers from a consumer's Prometheus text (summed over label sets)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in METRICS:
            out[METRICS[name]] = out.get(METRICS[name], 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def consumer_status(sink: str, url: str) -> dict[str, Any]:
    """A sink's consumer as its endpoint reports it: health verdict, state, rate and counters."""
    status: dict[str, Any] = {"sink": sink, "url": url, "group": consumer_group(sink)}
    try:
        health = requests.get(f"{url}/health", timeout=HTTP_TIMEOUT_S).json()
        status.update({k: health.get(k) for k in HEALTH_FIELDS})  # only what the page shows
        status.update(parse_metrics(requests.get(f"{url}/metrics", timeout=HTTP_TIMEOUT_S).text))
    except (requests.RequestException, ValueError, AttributeError) as exc:
        status.update(status="unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
    return status


def topic_lag(
    tps: Iterable[TopicPartition], end: dict[Any, int], begin: dict[Any, int], committed: dict[Any, Any]
) -> tuple[int, int]:
    """(lag, committed) of one group on one topic: a partition without a commit, or with one below
    the log's start, counts from the start, as the group would read it."""
    lag = done = 0
    for tp in tps:
        offset = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else begin[tp]
        position = max(offset, begin[tp])
        lag += max(0, end[tp] - position)
        done += position
    return lag, done


def rate(
    history: deque[tuple[float, int]], now: float, value: int, window_s: float = RATE_WINDOW_S
) -> float | None:
    """Per second over the samples of the last `window_s` (None until two span a second)."""
    history.append((now, value))
    while history and now - history[0][0] > window_s:
        history.popleft()
    (t0, v0), (t1, v1) = history[0], history[-1]
    return round(max(0, v1 - v0) / (t1 - t0), 1) if t1 - t0 >= 1.0 else None


LedgerCounts = dict[tuple[str, str], dict[str, int]]  # (sink, error kind) -> outcome -> records


def read_ledger(
    pg: PostgresSettings, newest: dict[str, list[tuple[int, int]]]
) -> tuple[dict[str, LedgerCounts], dict[tuple[str, int, int], str]]:
    """For each DLQ topic in `newest`: the ledger's outcomes by group, and those of the listed offsets."""
    kwargs = {
        **pg.connect_kwargs(),
        "application_name": CLIENT_ID,
        "connect_timeout": 5,
        "options": "-c statement_timeout=5000",
    }
    counts: dict[str, LedgerCounts] = {t: {} for t in newest}
    outcomes: dict[tuple[str, int, int], str] = {}
    conn = psycopg2.connect(**kwargs)
    try:
        with conn.cursor() as cur:
            # Grouped as the page groups dead letters (crawlstore.ui.letters.letter_of).
            cur.execute(
                "SELECT dlq_topic, COALESCE(NULLIF(connector, ''), %s), "
                "COALESCE(NULLIF(error_kind, ''), NULLIF(error_class, ''), %s), outcome, count(*) "
                "FROM dlq_replays WHERE dlq_topic = ANY(%s) GROUP BY 1, 2, 3, 4",
                (UNKNOWN, UNKNOWN, list(newest)),
            )
            for topic, sink, kind, outcome, n in cur.fetchall():
                counts[topic].setdefault((sink, kind), {})[outcome] = int(n)
            for topic, letters in newest.items():
                cur.execute(
                    "SELECT dlq_partition, dlq_offset, outcome FROM dlq_replays "
                    "WHERE dlq_topic = %s AND dlq_offset = ANY(%s)",
                    (topic, [offset for _, offset in letters]),
                )
                outcomes.update({(topic, int(p), int(o)): str(out) for p, o, out in cur.fetchall()})
        conn.rollback()
    finally:
        conn.close()
    return counts, outcomes


def merge_ledger(
    entry: dict[str, Any], counts: LedgerCounts, outcomes: dict[tuple[str, int, int], str]
) -> None:
    """A DLQ's groups get `handled` (outcomes by count) and `pending`; its newest letters their outcome."""
    for group in entry["groups"]:
        handled = counts.get((group["sink"], group["error_kind"]), {})
        group["handled"] = handled
        group["pending"] = max(0, group["count"] - sum(handled.values()))
    entry["pending"] = sum(g["pending"] for g in entry["groups"])
    for letter in entry["newest"]:
        letter["outcome"] = outcomes.get((entry["topic"], letter["partition"], letter["offset"]))


def reachable(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Whether any bootstrap server accepts a connection. Checked before a Kafka client is made:
    kafka-python's constructors start an IO thread and cannot be closed when they fail."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s).close()
            return True
        except (OSError, ValueError):
            continue
    return False


class PipelineState:
    """Builds snapshots; one per API-server process, shared by its requests."""

    def __init__(self) -> None:
        self.page = PageSettings()  # checked when the plugin loads: a bad value names its variable
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._taken = 0.0
        self._committed: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self._letters: LetterReader | None = None
        self._admin: KafkaAdminClient | None = None

    def snapshot(self) -> dict[str, Any]:
        """A fresh snapshot, or the last one (`stale`) while another request is building one."""
        if not self._lock.acquire(timeout=BUSY_WAIT_S):
            if self._snapshot is None:
                return {"pending": True, "errors": ["the first refresh is still under way"]}
            return {**self._snapshot, "stale": True}
        try:
            if self._snapshot is None or time.monotonic() - self._taken > FRESH_S:
                self._snapshot = self._build()
                self._taken = time.monotonic()
            return self._snapshot
        finally:
            self._lock.release()

    def _build(self) -> dict[str, Any]:
        kafka = KafkaSettings()
        snapshot: dict[str, Any] = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kafka_ui_url": self.page.kafka_ui_url,
            "consumers": [consumer_status(sink, url) for sink, url in self.page.consumer_urls().items()],
            "topics": [],
            "dlq": [],
            "errors": [],
        }
        try:
            if not reachable(kafka.bootstrap_servers):
                raise ConnectionError("no bootstrap server accepts connections")
            self._from_kafka(kafka, snapshot)
        except Exception as exc:  # the page shows what failed, and the rest
            log.warning("pipeline page: Kafka at %s: %s", kafka.bootstrap_servers, exc)
            snapshot["errors"].append(f"Kafka at {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}")
            snapshot["topics"], snapshot["dlq"] = [], []
            self._close_kafka()
        try:
            self._add_ledger(snapshot)
        except Exception as exc:
            log.warning("pipeline page: replay ledger: %s", exc)
            snapshot["errors"].append(f"replay ledger (PostgreSQL dlq_replays): {type(exc).__name__}: {exc}")
        return snapshot

    def _close_kafka(self) -> None:
        for client in (self._letters, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:
                    log.debug("closing a Kafka client: %s", exc)
        self._letters, self._admin = None, None

    # ------------------------------------------------------------------------------ Kafka

    def _from_kafka(self, kafka: KafkaSettings, snapshot: dict[str, Any]) -> None:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=kafka.bootstrap_servers,
                client_id=CLIENT_ID,
                request_timeout_ms=KAFKA_TIMEOUT_MS,
                bootstrap_timeout_ms=KAFKA_TIMEOUT_MS,
            )
        if self._letters is None:
            self._letters = LetterReader(kafka.bootstrap_servers, KAFKA_TIMEOUT_MS)
        topics = list(pipeline_topics())
        twins = [name for t in topics for name in (dlq_topic(t), parking_topic(t))]
        # One bounded metadata request (a consumer's partitions_for_topic can wait without end).
        described = {t["name"]: t for t in self._admin.describe_topics(topics + twins)}
        partitions = {
            t: sorted(p["partition_index"] for p in (described.get(t) or {}).get("partitions") or ())
            for t in topics + twins
        }
        tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        end, begin = self._letters.offsets(tps)
        groups = [consumer_group(s) for s in SINKS]
        committed = self._admin.list_group_offsets(groups)
        states = self._admin.describe_groups(groups)
        now = time.monotonic()
        dags = {t: sorted(f"crawl_{s.name}" for s in SOURCES if s.topic == t) for t in topics}
        for topic in topics:
            own = [tp for tp in tps if tp.topic == topic]
            sinks = []
            for sink, group in zip(SINKS, groups, strict=True):
                lag, done = topic_lag(own, end, begin, committed.get(group, {}))
                info = states.get(group, {})
                history = self._committed.setdefault((topic, group), deque())
                sinks.append(
                    {
                        "sink": sink,
                        "group": group,
                        "lag": lag,
                        "rate": rate(history, now, done),
                        "state": info.get("group_state") or info.get("state") or "",
                        "members": len(info.get("members") or []),
                    }
                )
            snapshot["topics"].append(
                {
                    "topic": topic,
                    "partitions": len(own),
                    "records": sum(end[tp] - begin[tp] for tp in own),
                    "dags": dags[topic],
                    "kafka_ui": self.page.topic_url(topic),
                    "sinks": sinks,
                }
            )
        deadline = now + DLQ_BUDGET_S
        for topic in topics:
            entry: dict[str, Any] = {"topic": topic, "dags": dags[topic]}
            for role, name in (("dlq", dlq_topic(topic)), ("parking", parking_topic(topic))):
                own = [tp for tp in tps if tp.topic == name]
                if not own:
                    entry[role] = {"topic": name, "missing": True, "records": 0, "groups": [], "newest": []}
                    continue
                budget = max(0.2, deadline - time.monotonic())
                letters = self._letters.refresh(
                    name,
                    {tp.partition: begin[tp] for tp in own},
                    {tp.partition: end[tp] for tp in own},
                    budget,
                )
                entry[role] = {**letters.as_dict(), "kafka_ui": self.page.topic_url(name)}
            snapshot["dlq"].append(entry)

    # ----------------------------------------------------------------------------- ledger

    def _add_ledger(self, snapshot: dict[str, Any]) -> None:
        """What replays dealt with: per group `handled` and `pending`, per newest letter its outcome."""
        entries = [e["dlq"] for e in snapshot["dlq"] if not e["dlq"].get("missing")]
        if not entries:
            return
        newest = {e["topic"]: [(x["partition"], x["offset"]) for x in e["newest"]] for e in entries}
        counts, outcomes = read_ledger(PostgresSettings(), newest)
        for entry in entries:
            merge_ledger(entry, counts[entry["topic"]], outcomes)


STATE = PipelineState()

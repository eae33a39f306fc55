"""The pipeline's state as the Pipeline page shows it, gathered from where it is true.

- Kafka: each topic's end offsets, and each sink's consumer group (its committed offsets, so its
  lag, its state and members). A sink's recent rate is how fast its committed offsets moved over
  the last minute of refreshes.
- The consumers' own `/health` and `/metrics` (PageSettings.consumers).
- The dead-letter and parking topics (crawlstore.ui.letters), and the replay ledger in
  PostgreSQL (`dlq_replays`): which dead letters a dlq_replay run has dealt with already.

Every part that cannot be reached says so in its `error` and leaves the others intact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import psycopg2
import requests
from kafka import KafkaAdminClient, TopicPartition

from crawlstore.connectors import SINKS, consumer_group
from crawlstore.settings import KafkaSettings, PageSettings, PostgresSettings
from crawlstore.sources import SOURCES
from crawlstore.topics import dlq_topic, parking_topic, pipeline_topics
from crawlstore.ui.letters import CLIENT_ID, LetterReader

log = logging.getLogger(__name__)
FRESH_S = 2.0  # a snapshot younger than this is served again
RATE_WINDOW_S = 60.0
DLQ_BUDGET_S = 3.0  # reading dead letters per refresh, over all DLQ topics
HTTP_TIMEOUT_S = 2.0
KAFKA_TIMEOUT_MS = 10_000  # Kafka away: the page says so within seconds
METRICS = {
    "crawlstore_consumer_records_per_second": "rate",
    "crawlstore_consumer_records_written_total": "written",
    "crawlstore_consumer_records_dead_lettered_total": "dead_lettered",
    "crawlstore_consumer_retries_total": "retries",
}


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
        health = requests.get(f"{url}/health", timeout=HTTP_TIMEOUT_S)
        status.update(health.json())
        status.update(parse_metrics(requests.get(f"{url}/metrics", timeout=HTTP_TIMEOUT_S).text))
    except (requests.RequestException, ValueError) as exc:
        status.update(status="unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
    return status


LedgerCounts = dict[tuple[str, str], dict[str, int]]  # (sink, error kind) -> outcome -> records


def read_ledger(
    pg: PostgresSettings, newest: dict[str, list[tuple[int, int]]]
) -> tuple[dict[str, LedgerCounts], dict[tuple[str, int, int], str]]:
    """For each DLQ topic in `newest`: the ledger's outcomes by group, and those of the listed offsets."""
    kwargs = {**pg.connect_kwargs(), "application_name": CLIENT_ID, "connect_timeout": 5}
    counts: dict[str, LedgerCounts] = {t: {} for t in newest}
    outcomes: dict[tuple[str, int, int], str] = {}
    conn = psycopg2.connect(**kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT dlq_topic, connector, error_kind, outcome, count(*) FROM dlq_replays "
                "WHERE dlq_topic = ANY(%s) GROUP BY 1, 2, 3, 4",
                (list(newest),),
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


class PipelineState:
    """Builds snapshots; one per API-server process, shared by its requests (one at a time)."""

    def __init__(self) -> None:
        self.page = PageSettings()  # checked when the plugin loads: a bad value names its variable
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._taken = 0.0
        self._committed: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self._letters: LetterReader | None = None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._taken > FRESH_S:
                self._snapshot = self._build()
                self._taken = time.monotonic()
            return self._snapshot

    def _build(self) -> dict[str, Any]:
        page = self.page
        kafka = KafkaSettings()
        snapshot: dict[str, Any] = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kafka_ui_url": page.kafka_ui_url,
            "consumers": [consumer_status(sink, url) for sink, url in page.consumer_urls().items()],
            "topics": [],
            "dlq": [],
            "errors": [],
        }
        try:
            self._from_kafka(kafka, page, snapshot)
        except Exception as exc:  # the page shows what failed, and the rest
            log.warning("pipeline page: Kafka at %s: %s", kafka.bootstrap_servers, exc)
            snapshot["errors"].append(f"Kafka at {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}")
            if self._letters is not None:
                self._letters.close()
                self._letters = None
        try:
            self._add_ledger(snapshot)
        except Exception as exc:
            log.warning("pipeline page: replay ledger: %s", exc)
            snapshot["errors"].append(f"replay ledger (PostgreSQL dlq_replays): {type(exc).__name__}: {exc}")
        return snapshot

    # ------------------------------------------------------------------------------ Kafka

    def _from_kafka(self, kafka: KafkaSettings, page: PageSettings, snapshot: dict[str, Any]) -> None:
        if self._letters is None:
            self._letters = LetterReader(kafka.bootstrap_servers)
        consumer = self._letters.consumer
        topics = list(pipeline_topics())
        twins = [name for t in topics for name in (dlq_topic(t), parking_topic(t))]
        partitions = {t: sorted(consumer.partitions_for_topic(t) or ()) for t in topics + twins}
        tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        end = consumer.end_offsets(tps, timeout_ms=KAFKA_TIMEOUT_MS)
        begin = consumer.beginning_offsets(tps, timeout_ms=KAFKA_TIMEOUT_MS)
        groups = [consumer_group(s) for s in SINKS]
        admin = KafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=CLIENT_ID,
            request_timeout_ms=KAFKA_TIMEOUT_MS,
            bootstrap_timeout_ms=5_000,
        )
        try:
            committed = admin.list_group_offsets(groups)
            described = admin.describe_groups(groups)
        finally:
            admin.close()
        now = time.monotonic()
        dags = {t: sorted(f"crawl_{s.name}" for s in SOURCES if s.topic == t) for t in topics}
        for topic in topics:
            sinks = []
            for sink, group in zip(SINKS, groups, strict=True):
                offsets = committed.get(group, {})
                done = sum(
                    offsets[tp].offset if tp in offsets and offsets[tp].offset >= 0 else begin[tp]
                    for tp in (TopicPartition(topic, p) for p in partitions[topic])
                )
                info = described.get(group, {})
                sinks.append(
                    {
                        "sink": sink,
                        "group": group,
                        "lag": sum(end[TopicPartition(topic, p)] for p in partitions[topic]) - done,
                        "rate": self._rate(topic, group, now, done),
                        "state": info.get("group_state") or info.get("state") or "",
                        "members": len(info.get("members") or []),
                    }
                )
            snapshot["topics"].append(
                {
                    "topic": topic,
                    "partitions": len(partitions[topic]),
                    "records": sum(end[tp] - begin[tp] for tp in tps if tp.topic == topic),
                    "dags": dags[topic],
                    "kafka_ui": page.topic_url(topic),
                    "sinks": sinks,
                }
            )
        deadline = now + DLQ_BUDGET_S
        for topic in topics:
            entry: dict[str, Any] = {"topic": topic, "dags": dags[topic]}
            for role, name in (("dlq", dlq_topic(topic)), ("parking", parking_topic(topic))):
                if not partitions[name]:
                    entry[role] = {"topic": name, "missing": True, "records": 0, "groups": [], "newest": []}
                    continue
                p_begin = {p: begin[TopicPartition(name, p)] for p in partitions[name]}
                p_end = {p: end[TopicPartition(name, p)] for p in partitions[name]}
                budget = max(0.2, deadline - time.monotonic())
                letters = self._letters.refresh(name, p_begin, p_end, budget)
                entry[role] = {**letters.as_dict(), "kafka_ui": page.topic_url(name)}
            snapshot["dlq"].append(entry)

    def _rate(self, topic: str, group: str, now: float, committed: int) -> float | None:
        """Records per second the group's committed offsets advanced over the last minute."""
        history = self._committed.setdefault((topic, group), deque())
        history.append((now, committed))
        while len(history) > 2 and now - history[1][0] >= RATE_WINDOW_S:
            history.popleft()
        (t0, c0), (t1, c1) = history[0], history[-1]
        return round(max(0, c1 - c0) / (t1 - t0), 1) if t1 - t0 >= 1.0 else None

    # ----------------------------------------------------------------------------- ledger

    def _add_ledger(self, snapshot: dict[str, Any]) -> None:
        """What replays dealt with: per group `handled` and `pending`, per newest letter its outcome."""
        entries = [e["dlq"] for e in snapshot["dlq"] if not e["dlq"].get("missing")]
        if not entries:
            return
        newest = {e["topic"]: [(x["partition"], x["offset"]) for x in e["newest"]] for e in entries}
        counts, outcomes = read_ledger(PostgresSettings(), newest)
        for entry in entries:
            for group in entry["groups"]:
                handled = counts[entry["topic"]].get((group["sink"], group["error_kind"]), {})
                group["handled"] = handled
                group["pending"] = max(0, group["count"] - sum(handled.values()))
            entry["pending"] = sum(g["pending"] for g in entry["groups"])
            for letter in entry["newest"]:
                letter["outcome"] = outcomes.get((entry["topic"], letter["partition"], letter["offset"]))


STATE = PipelineState()

"""DLQ replay against the real services: each test has its own topic `test.<uuid>` with its `-dlq`
and `-dlq-parking`, its own store locations (OpenSearch prefix, HDFS root) and run ids.

What a user would check: the fixed records are in the store once, the other stores did not see
them again, the replay's consumer group is caught up, a dry run changes nothing and counts right,
records that keep failing end up parked with their headers, and a killed replay resumes without
duplicates or gaps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from consumers.errors import StoreRejected
from consumers.replay.request import GROUP_PREFIX, ReplayRequest
from consumers.replay.run import replay
from crawlstore.dlq import (
    H_ATTEMPTS,
    H_CONNECTOR,
    H_EXC_CLASS,
    H_FIRST_FAILED_AT,
    H_OFFSET,
    H_PARTITION,
    H_REPLAY_COUNT,
    H_TOPIC,
    STAGE_SINK,
    STAGE_VALIDATE,
    dead_letter,
    failure_context,
)
from crawlstore.messages import H_RUN_ID, H_SCHEMA, H_SOURCE, Record, RecordRejected, encode_item
from crawlstore.topics import dlq_topic, parking_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PG_REJECTED = "consumers.errors.StoreRejected"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def replay_topic(make_topic: Callable[..., str]) -> str:
    """`test.<uuid>` (3 partitions), its `-dlq` and its `-dlq-parking`."""
    topic = make_topic()
    make_topic(parking_topic(topic), partitions=1, with_dlq=False)
    return topic


@pytest.fixture
def run_ids(kafka_servers: str, replay_topic: str) -> Iterator[Callable[[str], str]]:
    """Unique run ids; their ledger rows, kafka_offsets rows and consumer groups go afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def make(label: str) -> str:
        return f"{prefix}-{label}"

    yield make
    conn = psycopg2.connect(**_pg_kwargs())
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM dlq_replays WHERE dlq_topic = %s", (dlq_topic(replay_topic),))
        cur.execute("DELETE FROM kafka_offsets WHERE consumer_group LIKE %s", (GROUP_PREFIX + prefix + "%",))
    conn.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(GROUP_PREFIX + prefix)]
    if groups:
        admin.delete_groups(groups)
    admin.close()


def _pg_kwargs() -> dict[str, Any]:
    from crawlstore.settings import PostgresSettings

    return PostgresSettings().connect_kwargs()  # type: ignore[call-arg]


@pytest.fixture
def sink_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """Point the replay's sinks (built from CONSUMER_* settings) at a test store."""

    def apply(store: Any) -> None:
        for name, value in store.env.items():
            monkeypatch.setenv(name, value)

    return apply


def _letters(
    kit: Any,
    topic: str,
    items: list[Any],
    *,
    connector: str,
    error: Exception,
    stage: str = STAGE_SINK,
    now: datetime | None = None,
    values: list[bytes] | None = None,
) -> list[Any]:
    out = []
    for i, item in enumerate(items):
        message = encode_item(item, topic, "crawl-run-1")
        value = values[i] if values else message.value
        original = Record(
            topic, i % 3, 1000 + i, message.key, value, message.timestamp_ms, tuple(message.headers)
        )
        letter = dead_letter(original, connector=connector, stage=stage, error=error, now=now)
        out.append(kit.Sent(letter.key, letter.value, letter.headers, letter.timestamp_ms))
    return out


def end_offsets(servers: str, topics: list[str]) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        out = {}
        for topic in topics:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            out[topic] = sum(consumer.end_offsets(tps).values())
        return out
    finally:
        consumer.close()


def group_offsets(servers: str, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        found = admin.list_group_offsets(group).get(group) or {}
        return {tp: meta.offset for tp, meta in found.items()}
    finally:
        admin.close()


def ledger(pg: Any, topic: str) -> dict[int, tuple[str, str]]:
    with pg.cursor() as cur:
        cur.execute(
            "SELECT dlq_offset, outcome, run_id FROM dlq_replays WHERE dlq_topic = %s", (dlq_topic(topic),)
        )
        return {int(o): (outcome, run) for o, outcome, run in cur.fetchall()}


def os_versions(kit: Any, url: str, store: Any) -> dict[str, tuple[int, int]]:
    prefix = store.env["CONSUMER_OPENSEARCH_INDEX_PREFIX"]
    return {k: (h["_version"], h["_seq_no"]) for k, h in kit.os_search(url, f"{prefix}products").items()}


# ---------------------------------------------------------------------------- tests


def test_fixed_store_rejection_is_replayed_into_that_store_only_exactly_once(
    kit: Any,
    replay_topic: str,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    key_prefix: str,
    pg: Any,
    webhdfs: Any,
    opensearch_url: str,
    kafka_servers: str,
    read_topic: Any,
    run_ids: Callable[[str], str],
    sink_env: Callable[[Any], None],
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    marker = f"RPL{uuid.uuid4().hex[:8]}"
    constraint = f"test_reject_{marker.lower()}"
    good = [kit.product(f"{key_prefix}good{i}", i) for i in range(20)]
    poison = [kit.product(f"{key_prefix}poison{i}", 100 + i, name=f"{marker} product {i}") for i in range(10)]
    stores = {sink: make_store(sink, topic, key_prefix) for sink in ("postgres", "opensearch", "hdfs")}

    with pg.cursor() as cur:  # the "bug": a constraint that refuses exactly this test's poison names
        cur.execute("SET lock_timeout = '30s'")
        cur.execute(
            f"ALTER TABLE products ADD CONSTRAINT {constraint} CHECK (name NOT LIKE '{marker}%') NOT VALID"
        )
    try:
        producer(topic, good[:10] + poison + good[10:])
        consumers = [run_consumer(sink, topics=topic, **store.env) for sink, store in stores.items()]
        kit.eventually("postgres dead-lettered the poison", lambda: len(read_topic(dlq)) >= len(poison))
        kit.eventually(
            "opensearch and hdfs stored all 30",
            lambda: all(len({r["key"] for r in stores[s].records()}) == 30 for s in ("opensearch", "hdfs")),
        )
        kit.eventually("postgres stored the 20 good ones", lambda: len(stores["postgres"].records()) == 20)
        for consumer in consumers:
            assert consumer.stop() == 0
        letters = read_topic(dlq)
        assert len(letters) == len(poison)
        assert {failure_context(m.headers).connector for m in letters} == {"postgres"}

        hdfs_root = stores["hdfs"].env["CONSUMER_HDFS_ROOT"]
        hdfs_before = webhdfs.files(hdfs_root, topic)
        os_before = os_versions(kit, opensearch_url, stores["opensearch"])
        all_topics = [topic, dlq, parking_topic(topic)]
        kafka_before = end_offsets(kafka_servers, all_topics)
        for store in stores.values():
            sink_env(store)

        # A dry run before the fix: counts what would be replayed, changes nothing.
        dry = replay(ReplayRequest(run_id=run_ids("dry"), topics=(topic,), dry_run=True))
        assert (dry.outcomes["would_replay"], dry.scanned, sum(dry.skipped.values())) == (10, 10, 0)
        assert {k: dict(v) for k, v in dry.by_sink.items()} == {"postgres": {"would_replay": 10}}
        assert {k: dict(v) for k, v in dry.by_error_class.items()} == {PG_REJECTED: {"would_replay": 10}}
        assert end_offsets(kafka_servers, all_topics) == kafka_before
        assert ledger(pg, topic) == {}
        assert group_offsets(kafka_servers, ReplayRequest(run_id=run_ids("dry")).group) == {}
        assert len(stores["postgres"].records()) == 20

        with pg.cursor() as cur:  # the fix
            cur.execute(f"ALTER TABLE products DROP CONSTRAINT {constraint}")

        run = ReplayRequest(run_id=run_ids("fix"), topics=(topic,))
        summary = replay(run)
        assert (
            summary.outcomes["replayed"],
            summary.outcomes["failed_again"],
            summary.outcomes["parked"],
        ) == (10, 0, 0)
        assert {k: dict(v) for k, v in summary.by_sink.items()} == {"postgres": {"replayed": 10}}

        rows = kit.pg_rows(pg, "products", key_prefix)
        assert set(rows) == {i.key for i in good + poison}  # primary key: each exactly once
        for item in poison:
            row = rows[item.key]
            assert row["name"] == item.name and row["kafka_topic"] == dlq  # lineage: came from the DLQ
        # The other sinks did not see the records again, and nothing new went to Kafka.
        assert webhdfs.files(hdfs_root, topic) == hdfs_before
        assert webhdfs.files(hdfs_root, dlq) == {}
        assert os_versions(kit, opensearch_url, stores["opensearch"]) == os_before
        assert end_offsets(kafka_servers, all_topics) == kafka_before
        # The replay's consumer group is caught up with the DLQ; the ledger lists every record.
        assert group_offsets(kafka_servers, run.group) == {TopicPartition(dlq, 0): kafka_before[dlq]}
        assert summary.committed == {f"{dlq}[0]": kafka_before[dlq]}
        assert {o for o, _ in ledger(pg, topic).values()} == {"replayed"}
        assert len(ledger(pg, topic)) == 10

        # Another run (e.g. a manual one over all time) does not replay them again.
        landed = {k: r["landed_at"] for k, r in kit.pg_rows(pg, "products", key_prefix).items()}
        again = replay(ReplayRequest(run_id=run_ids("again"), topics=(topic,)))
        assert again.handled == 0 and again.skipped == Counter({"already_handled": 10})
        assert {k: r["landed_at"] for k, r in kit.pg_rows(pg, "products", key_prefix).items()} == landed
    finally:
        with pg.cursor() as cur:
            cur.execute(f"ALTER TABLE products DROP CONSTRAINT IF EXISTS {constraint}")


def test_dry_run_counts_by_sink_and_error_class_and_filters_select(
    kit: Any,
    replay_topic: str,
    producer: Any,
    key_prefix: str,
    pg: Any,
    kafka_servers: str,
    run_ids: Callable[[str], str],
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    items = [kit.product(f"{key_prefix}{i}", i) for i in range(12)]
    bad_json = b'{"product_id": '
    sent = producer(
        dlq,
        [
            *_letters(
                kit,
                topic,
                items[0:4],
                connector="postgres",
                error=StoreRejected("postgres_23514", "check"),
                now=day,
            ),
            *_letters(
                kit,
                topic,
                items[4:6],
                connector="opensearch",
                error=StoreRejected("opensearch_mapper_parsing_exception", "mapping"),
                now=day + timedelta(days=1),
            ),
            *_letters(kit, topic, items[6:8], connector="hdfs", error=StoreRejected("hdfs_x", "x"), now=day),
            # validation refused one that is valid after all, and one that is still broken
            *_letters(
                kit,
                topic,
                items[8:10],
                connector="validate",
                stage=STAGE_VALIDATE,
                error=RecordRejected("schema_violation", "price"),
                now=day,
                values=[items[8].model_dump_json().encode(), bad_json],
            ),
            # a sink dead-lettered bytes no sink can decode
            *_letters(
                kit,
                topic,
                items[10:11],
                connector="postgres",
                stage="VALUE_CONVERTER",
                error=RecordRejected("invalid_json", "not JSON"),
                now=day,
                values=[bad_json],
            ),
            kit.Sent(b"no-context", b"{}", [], None),  # not a dead letter of ours
        ],
    )
    offsets = [s.offset for s in sent]
    before = end_offsets(kafka_servers, [topic, dlq, parking_topic(topic)])

    def dry(label: str, **filters: Any) -> Any:
        return replay(ReplayRequest(run_id=run_ids(label), topics=(topic,), dry_run=True, **filters))

    everything = dry("all")
    assert everything.scanned == 12
    assert everything.skipped == Counter({"no_context": 1})
    assert dict(everything.outcomes) == {"would_replay": 8, "would_republish": 1, "would_fail_again": 2}
    assert {k: dict(v) for k, v in everything.by_sink.items()} == {
        "postgres": {"would_replay": 4, "would_fail_again": 1},
        "opensearch": {"would_replay": 2},
        "hdfs": {"would_replay": 2},
        "validate": {"would_republish": 1, "would_fail_again": 1},
    }
    assert {k: dict(v) for k, v in everything.by_error_class.items()} == {
        PG_REJECTED: {"would_replay": 8},
        "crawlstore.messages.RecordRejected": {"would_republish": 1, "would_fail_again": 2},
    }
    assert dry("pg", sink="postgres").handled == 5
    assert dry("kind", error_class="opensearch_*").outcomes == Counter({"would_replay": 2})
    assert dry("short", error_class="RecordRejected").handled == 3
    assert dry("exact", error_kind="opensearch_mapper_parsing_exception").outcomes == Counter(
        {"would_replay": 2}
    )
    assert dry("no wildcards", error_kind="opensearch_*").handled == 0
    assert dry("window", failed_from=day + timedelta(days=1), failed_to=day + timedelta(days=2)).handled == 2
    assert dry("offsets", offset_from=offsets[2], offset_to=offsets[5]).handled == 4
    assert dry("limit", max_records=3).handled == 3
    assert dry("park", max_replays=1).outcomes["would_park"] == 2
    assert dry("topic", target="topic").outcomes == Counter({"would_republish": 11})
    # Nothing changed anywhere.
    assert end_offsets(kafka_servers, [topic, dlq, parking_topic(topic)]) == before
    assert ledger(pg, topic) == {}


def test_records_that_keep_failing_are_parked_after_the_limit_with_their_headers(
    kit: Any,
    replay_topic: str,
    producer: Any,
    key_prefix: str,
    pg: Any,
    read_topic: Any,
    run_ids: Callable[[str], str],
) -> None:
    topic, dlq, parking = replay_topic, dlq_topic(replay_topic), parking_topic(replay_topic)
    first_failure = datetime(2026, 5, 1, 12, tzinfo=UTC)
    nul = kit.product(f"{key_prefix}nul", 1, name="NUL \u0000 inside")  # PostgreSQL refuses NUL in text
    producer(
        dlq,
        _letters(
            kit,
            topic,
            [nul],
            connector="postgres",
            error=StoreRejected("postgres_ValueError", "NUL"),
            now=first_failure,
        ),
    )

    outcomes = []
    for attempt in range(1, 5):
        summary = replay(ReplayRequest(run_id=run_ids(f"try{attempt}"), topics=(topic,), max_replays=3))
        outcomes.append((summary.outcomes["failed_again"], summary.outcomes["parked"], summary.handled))
    # 3 replays: back to the DLQ twice, parked on the third; a 4th run finds nothing left to do.
    assert outcomes == [(1, 0, 1), (1, 0, 1), (0, 1, 1), (0, 0, 0)]

    copies = [failure_context(m.headers).replay_count for m in read_topic(dlq)]
    assert copies == [0, 1, 2]
    assert {o for o, _ in ledger(pg, topic).values()} == {"failed_again", "parked"}
    [parked] = read_topic(parking)
    headers = dict(parked.headers)
    message = encode_item(nul, topic, "crawl-run-1")
    assert (parked.key, parked.value, parked.timestamp) == (message.key, message.value, message.timestamp_ms)
    assert headers[H_TOPIC] == topic.encode() and headers[H_CONNECTOR] == b"postgres"
    assert (headers[H_PARTITION], headers[H_OFFSET]) == (b"0", b"1000")  # the original record
    assert headers[H_REPLAY_COUNT] == b"3" and headers[H_ATTEMPTS] == b"4"
    assert headers[H_FIRST_FAILED_AT] == first_failure.isoformat().encode()
    assert headers[H_EXC_CLASS] == PG_REJECTED.encode()
    for name, value in message.headers:  # the item's own headers travel along
        assert headers[name] == value
    assert kit.pg_rows(pg, "products", key_prefix) == {}


def test_validation_failures_are_republished_when_valid_now_and_target_topic_republishes_as_is(
    kit: Any,
    replay_topic: str,
    producer: Any,
    key_prefix: str,
    read_topic: Any,
    run_ids: Callable[[str], str],
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    valid_now, still_bad, pg_failed = (kit.product(f"{key_prefix}{i}", i) for i in range(3))
    producer(
        dlq,
        [
            *_letters(
                kit,
                topic,
                [valid_now, still_bad],
                connector="validate",
                stage=STAGE_VALIDATE,
                error=RecordRejected("schema_violation", "x"),
                values=[valid_now.model_dump_json().encode(), b'{"product_id": "x"}'],
            ),
            *_letters(
                kit, topic, [pg_failed], connector="postgres", error=StoreRejected("postgres_23514", "check")
            ),
        ],
    )

    summary = replay(ReplayRequest(run_id=run_ids("validate"), topics=(topic,), sink="validate"))
    assert (summary.outcomes["republished"], summary.outcomes["failed_again"]) == (1, 1)
    [published] = read_topic(topic)
    expected = encode_item(valid_now, topic, "crawl-run-1")
    headers = dict(published.headers)
    assert (published.key, published.value) == (expected.key, expected.value)
    assert headers[H_SCHEMA] == b"crawlstore.product.v1" and headers[H_SOURCE] == b"testshop"
    assert headers[H_RUN_ID] == b"crawl-run-1" and headers[H_REPLAY_COUNT] == b"1"
    back = [m for m in read_topic(dlq) if failure_context(m.headers).replay_count == 1]
    assert [failure_context(m.headers).connector for m in back] == ["validate"]

    as_is = replay(ReplayRequest(run_id=run_ids("topic"), topics=(topic,), sink="postgres", target="topic"))
    assert as_is.outcomes == Counter({"republished": 1})
    republished = next(m for m in read_topic(topic) if m.key == pg_failed.key.encode())
    original = encode_item(pg_failed, topic, "crawl-run-1")
    assert (republished.value, republished.timestamp) == (original.value, original.timestamp_ms)
    assert dict(republished.headers)[H_REPLAY_COUNT] == b"1"
    assert failure_context(republished.headers).topic == topic  # lineage kept for the next failure


@pytest.mark.parametrize("sink", ["postgres", "opensearch", "hdfs"])
def test_lost_ledger_write_after_a_durable_store_write_does_not_duplicate(
    sink: str,
    kit: Any,
    replay_topic: str,
    producer: Any,
    make_store: Any,
    key_prefix: str,
    pg: Any,
    webhdfs: Any,
    kafka_servers: str,
    run_ids: Callable[[str], str],
    sink_env: Callable[[Any], None],
) -> None:
    """The crash window: the store has the records, the ledger and the group offsets do not."""
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    store = make_store(sink, dlq, key_prefix)  # replayed records carry the DLQ topic as lineage
    sink_env(store)
    items = [kit.product(f"{key_prefix}{i}", i) for i in range(20)]
    producer(dlq, _letters(kit, topic, items, connector=sink, error=StoreRejected(f"{sink}_x", "x")))
    run = ReplayRequest(run_id=run_ids("crash"), topics=(topic,))
    assert replay(run).outcomes["replayed"] == 20
    stored = store.records()
    assert sorted(r["offset"] for r in stored) == list(range(20))

    with pg.cursor() as cur:  # as if the run died right after the store's commit
        cur.execute("DELETE FROM dlq_replays WHERE dlq_topic = %s", (dlq,))
    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    admin.delete_groups([run.group])
    admin.close()

    rerun = replay(run)
    assert rerun.outcomes["replayed"] == 20
    again = store.records()
    assert sorted(r["offset"] for r in again) == list(range(20))  # HDFS: one line per DLQ offset
    key = {"postgres": "landed_at", "opensearch": "_version", "hdfs": "offset"}[sink]
    assert {r["key"]: r[key] for r in again} == {r["key"]: r[key] for r in stored}  # untouched
    if sink == "hdfs":
        assert len(webhdfs.files(store.env["CONSUMER_HDFS_ROOT"], dlq)) == 1


def test_killed_replay_resumes_without_duplicates_or_gaps(
    kit: Any,
    replay_topic: str,
    producer: Any,
    make_store: Any,
    key_prefix: str,
    pg: Any,
    kafka_servers: str,
    run_ids: Callable[[str], str],
    stack_env: dict[str, str],
    tmp_path: Path,
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    store = make_store("hdfs", dlq, key_prefix)  # HDFS is the store where a second write shows
    items = [kit.product(f"{key_prefix}{i}", i) for i in range(300)]
    producer(dlq, _letters(kit, topic, items, connector="hdfs", error=StoreRejected("hdfs_x", "x")))
    run_id = run_ids("killed")
    env = {**stack_env, **store.env, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "consumers.replay",
        "--run-id",
        run_id,
        "--topic",
        topic,
        "--rate-limit",
        "20",
    ]

    log_path = tmp_path / "first.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            kit.eventually("half of the records replayed", lambda: len(ledger(pg, topic)) >= 150, 60, 0.1)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    done_before = len(ledger(pg, topic))
    assert 150 <= done_before < 300, log_path.read_text()

    rerun = subprocess.run([*command[:-2]], cwd=ROOT, env=env, capture_output=True, timeout=300, check=False)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr).decode()[-3000:]
    output = rerun.stdout.decode() + rerun.stderr.decode()
    summary = json.loads(rerun.stdout.decode().splitlines()[-1])
    assert summary["replayed"] == 300 - done_before  # the rest, whatever the first attempt got to
    assert "replay summary: replayed=" in output, output[-3000:]
    assert "progress test." in log_path.read_text()  # the killed run had logged its progress

    lines = store.records()
    assert sorted(r["offset"] for r in lines) == list(range(300))  # every record, each once
    assert Counter(o for o, _ in ledger(pg, topic).values()) == Counter({"replayed": 300})
    run = ReplayRequest(run_id=run_id)
    assert group_offsets(kafka_servers, run.group) == {TopicPartition(dlq, 0): 300}


def test_rate_limit_paces_the_replay(
    kit: Any,
    replay_topic: str,
    producer: Any,
    make_store: Any,
    key_prefix: str,
    run_ids: Callable[[str], str],
    sink_env: Callable[[Any], None],
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    store = make_store("postgres", dlq, key_prefix)
    items = [kit.product(f"{key_prefix}{i}", i) for i in range(30)]
    producer(dlq, _letters(kit, topic, items, connector="postgres", error=StoreRejected("postgres_x", "x")))
    started = time.monotonic()
    summary = replay(ReplayRequest(run_id=run_ids("rate"), topics=(topic,), rate_limit=10))
    took = time.monotonic() - started
    assert summary.outcomes["replayed"] == 30 and len(store.records()) == 30
    assert took >= 1.9  # 30 records at 10/s with a one-second burst: at least 2 s


def test_replays_of_the_same_dlq_wait_for_each_other(
    kit: Any,
    replay_topic: str,
    producer: Any,
    make_store: Any,
    key_prefix: str,
    pg: Any,
    run_ids: Callable[[str], str],
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    store = make_store("postgres", dlq, key_prefix)
    items = [kit.product(f"{key_prefix}{i}", i) for i in range(5)]
    producer(dlq, _letters(kit, topic, items, connector="postgres", error=StoreRejected("postgres_x", "x")))
    holder = psycopg2.connect(**{**_pg_kwargs(), "application_name": "test-other-replay"})
    holder.autocommit = True
    with holder.cursor() as cur:  # another replay of the same DLQ is running
        cur.execute("SELECT pg_advisory_lock(hashtext('crawlstore.dlq_replay'), hashtext(%s))", (dlq,))
    run_id = run_ids("waits")
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(replay(ReplayRequest(run_id=run_id, topics=(topic,))))
    )

    def waiting() -> bool:
        with pg.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (f"crawlstore-dlq-replay {run_id}"[:63],),
            )
            return bool(cur.fetchone()[0])

    try:
        thread.start()
        kit.eventually("the replay has started", waiting, 30)
        time.sleep(3)
        assert thread.is_alive() and store.records() == [] and ledger(pg, topic) == {}
    finally:
        holder.close()  # the other run ends: its lock goes with its session
        thread.join(timeout=60)
    assert result and result[0].outcomes["replayed"] == 5 and len(store.records()) == 5


def test_republished_records_older_than_the_topics_retention_get_the_replay_time(
    kit: Any,
    replay_topic: str,
    producer: Any,
    key_prefix: str,
    read_topic: Any,
    run_ids: Callable[[str], str],
) -> None:
    topic, dlq = replay_topic, dlq_topic(replay_topic)
    old = kit.product(f"{key_prefix}old", 0, crawled_at=datetime.now(UTC) - timedelta(days=10))
    producer(
        dlq, _letters(kit, topic, [old], connector="opensearch", error=StoreRejected("opensearch_x", "x"))
    )
    summary = replay(ReplayRequest(run_id=run_ids("old"), topics=(topic,), target="topic"))
    assert summary.outcomes["republished"] == 1 and summary.restamped == 1
    [message] = read_topic(topic)
    assert abs(message.timestamp / 1000 - time.time()) < 120  # not deleted by the 7-day retention at once
    assert json.loads(message.value)["crawled_at"] == old.model_dump(mode="json")["crawled_at"]

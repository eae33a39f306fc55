"""The PostgreSQL consumer against real Kafka and PostgreSQL: rows, offsets, replays, shutdown, scale-out."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from kafka.structs import TopicPartition

from consumers.errors import Fenced
from consumers.postgres import PostgresSink
from crawlstore.settings import PostgresSettings

pytestmark = pytest.mark.integration


def offsets_of(pg: Any, group: str) -> dict[tuple[str, int], int]:
    with pg.cursor() as cur:
        cur.execute(
            "SELECT topic, kafka_partition, next_offset FROM kafka_offsets WHERE consumer_group = %s",
            (group,),
        )
        return {(t, p): o for t, p, o in cur.fetchall()}


def test_lands_every_record_with_its_content_and_a_redelivery_changes_nothing(
    kit: Any, topic: str, producer: Any, run_consumer: Any, pg: Any, key_prefix: str
) -> None:
    items = [kit.product(f"{key_prefix}p{i}", i) for i in range(300)] + [
        kit.reading(f"{key_prefix}r{i}", i) for i in range(200)
    ]
    sent = producer(topic, items)
    consumer = run_consumer("postgres", topics=topic)
    group = consumer.env["CONSUMER_GROUP"]
    kit.eventually(
        "500 rows in PostgreSQL",
        lambda: (
            len(kit.pg_rows(pg, "products", key_prefix)) == 300
            and len(kit.pg_rows(pg, "readings", key_prefix)) == 200
        ),
    )

    products = kit.pg_rows(pg, "products", key_prefix)
    readings = kit.pg_rows(pg, "readings", key_prefix)
    for s in sent:
        item = s.item
        row = products[item.key] if item.kind == "product" else readings[item.key]
        assert row["crawled_at"] == item.crawled_at
        assert row["raw"] == json.loads(s.value)
        assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
            topic,
            s.partition,
            s.offset,
        )
        if item.kind == "product":
            assert (row["name"], row["price"], row["currency"], row["url"]) == (
                item.name,
                item.price,
                item.currency,
                item.url,
            )
            assert row["rating"] == pytest.approx(item.rating)
        else:
            assert (row["device_id"], row["sensor1"], row["is_fail"], row["measured_at"]) == (
                item.device_id,
                item.sensor1,
                item.is_fail,
                item.measured_at,
            )

    # The offsets in PostgreSQL account for every record of every partition.
    ends = {}
    for s in sent:
        ends[(topic, s.partition)] = max(ends.get((topic, s.partition), 0), s.offset + 1)
    kit.eventually("kafka_offsets caught up", lambda: offsets_of(pg, group) == ends)
    assert consumer.stop() == 0

    # Deliver the same records again: a group without stored offsets re-reads the whole topic.
    again = run_consumer("postgres", topics=topic, group=group + "-again")
    again.wait_healthy()
    kit.eventually(
        "the replay consumed everything",
        lambda: again.metric("crawlstore_consumer_records_written_total") == 500,
    )
    assert kit.pg_rows(pg, "products", key_prefix) == products  # landed_at included: no row was touched
    assert kit.pg_rows(pg, "readings", key_prefix) == readings
    assert again.stop() == 0


def test_a_stale_record_never_overwrites_a_newer_row(
    kit: Any, topic: str, producer: Any, run_consumer: Any, pg: Any, key_prefix: str
) -> None:
    key = f"{key_prefix}stale"
    v1 = kit.product(key, 0, name="version one")
    v2 = kit.product(key, 0, name="version two", crawled_at=v1.crawled_at + timedelta(hours=1))
    consumer = run_consumer("postgres", topics=topic)
    consumer.wait_healthy()
    producer(topic, [v1, v2])
    kit.eventually(
        "version two landed",
        lambda: kit.pg_rows(pg, "products", key_prefix).get(key, {}).get("name") == "version two",
    )
    # v1 published again (a replay from the DLQ, a late crawler): later offset, older crawl.
    late = producer(topic, [v1])[0]
    kit.eventually(
        "the late record was consumed",
        lambda: offsets_of(pg, consumer.env["CONSUMER_GROUP"]).get((topic, late.partition), 0) > late.offset,
    )
    row = kit.pg_rows(pg, "products", key_prefix)[key]
    assert row["name"] == "version two" and row["crawled_at"] == v2.crawled_at
    # Same crawl time, later offset: the later record wins (it is the newer publication).
    same_time = kit.product(key, 0, name="version two, republished", crawled_at=v2.crawled_at)
    producer(topic, [same_time])
    kit.eventually(
        "the re-publication replaced the row",
        lambda: kit.pg_rows(pg, "products", key_prefix)[key]["name"] == "version two, republished",
    )
    assert consumer.stop() == 0


def test_sigterm_flushes_what_is_buffered_and_exits_zero(
    kit: Any, topic: str, producer: Any, run_consumer: Any, pg: Any, key_prefix: str
) -> None:
    # Batches that would wait ten minutes: only the shutdown can flush them.
    consumer = run_consumer(
        "postgres", topics=topic, batch_max_wait_ms=600_000, batch_idle_ms=600_000, batch_max_records=100_000
    )
    consumer.wait_healthy()
    producer(topic, [kit.product(f"{key_prefix}{i}", i) for i in range(120)])
    kit.eventually(
        "records polled into the buffer",
        lambda: consumer.metric("crawlstore_consumer_records_consumed_total") == 120,
    )
    assert kit.pg_rows(pg, "products", key_prefix) == {}
    assert consumer.stop(timeout_s=40) == 0
    assert len(kit.pg_rows(pg, "products", key_prefix)) == 120
    assert "SIGTERM received" in consumer.log_text()


def test_health_and_metrics_endpoints(
    kit: Any, topic: str, producer: Any, run_consumer: Any, key_prefix: str, pg: Any
) -> None:
    consumer = run_consumer("postgres", topics=topic)
    consumer.wait_healthy()
    status, body = consumer.health()
    assert status == 200 and body["assigned_partitions"] == 3 and body["state"] == "consuming"
    producer(topic, [kit.product(f"{key_prefix}{i}", i) for i in range(50)])
    kit.eventually(
        "written counter", lambda: consumer.metric("crawlstore_consumer_records_written_total") == 50
    )

    def lags() -> dict[str, float]:
        return {k: v for k, v in consumer.metrics().items() if k.startswith("crawlstore_consumer_lag{")}

    kit.eventually(
        "lag of every partition reported, back to zero",
        lambda: len(lags()) == 3 and sum(lags().values()) == 0,
    )
    assert all(f'topic="{topic}"' in k for k in lags())
    assert consumer.metric("crawlstore_consumer_records_consumed_total") == 50
    assert consumer.metric("crawlstore_consumer_up") == 1
    assert consumer.stop() == 0
    assert consumer.health()[0] == 0  # endpoint gone with the process


def test_two_consumers_in_one_group_share_partitions_and_land_each_record_once(
    kit: Any, topic: str, producer: Any, run_consumer: Any, pg: Any, key_prefix: str
) -> None:
    first = run_consumer("postgres", topics=topic)
    group = first.env["CONSUMER_GROUP"]
    first.wait_healthy()
    second = run_consumer("postgres", topics=topic, group=group)
    kit.eventually(
        "both consumers own partitions",
        lambda: (
            first.health()[1].get("assigned_partitions", 0) + second.health()[1].get("assigned_partitions", 0)
            == 3
            and second.health()[0] == 200
        ),
        90,
    )
    items = [kit.product(f"{key_prefix}{i}", i) for i in range(600)]
    sent = producer(topic, items[:300])
    kit.eventually("first half landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 300)
    assert first.stop() == 0  # its partitions move to the second consumer
    sent += producer(topic, items[300:])
    kit.eventually("second half landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 600)
    rows = kit.pg_rows(pg, "products", key_prefix)
    assert {(r["kafka_partition"], r["kafka_offset"]) for r in rows.values()} == {
        (s.partition, s.offset) for s in sent
    }
    assert second.stop() == 0


def test_a_consumer_whose_partition_was_opened_elsewhere_commits_nothing_for_it(
    kit: Any, pg: Any, key_prefix: str
) -> None:
    """Fencing: the partition's kafka_offsets row takes a new owner_epoch on every open, and a flush
    under an older epoch rolls back. The old owner stalled between its upsert and its commit (frozen
    past its session timeout, say) while another consumer opened the partition."""
    topic, group = f"fence.{uuid.uuid4().hex[:8]}", f"test-fence-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)

    def products(offsets: range, name: str) -> Any:
        items = [kit.product(f"{key_prefix}{o}", o, name=f"{name} {o}") for o in offsets]
        return kit.batch_of(kit.decoded(items, topic, 0, offsets.start))

    old, new = PostgresSink(PostgresSettings(), group), PostgresSink(PostgresSettings(), group)
    try:
        old.start()
        assert old.open([tp], {}) == {}
        first = products(range(0, 50), "first")
        old.put(first)
        old.flush(first)
        stale = products(range(50, 100), "stale")
        old.put(stale)  # upserted in its open transaction; now the old owner stalls

        assert new.open([tp], {}) == {tp: 50}
        with pytest.raises(Fenced) as fenced:
            old.flush(stale)
        assert fenced.value.partitions == {tp}
        old.abort()
        assert sorted(kit.pg_rows(pg, "products", key_prefix)) == sorted(
            f"{key_prefix}{o}" for o in range(50)
        )

        fresh = products(range(50, 120), "fresh")
        new.put(fresh)
        new.flush(fresh)
        rows = kit.pg_rows(pg, "products", key_prefix)
        assert len(rows) == 120
        assert {r["name"].split()[0] for k, r in rows.items() if int(k.removeprefix(key_prefix)) >= 50} == {
            "fresh"
        }
        with pg.cursor() as cur:
            cur.execute(
                "SELECT next_offset, owner_epoch FROM kafka_offsets WHERE consumer_group = %s", (group,)
            )
            assert cur.fetchall() == [(120, 2)]
    finally:
        old.stop()
        new.stop()
        with pg.cursor() as cur:
            cur.execute("DELETE FROM kafka_offsets WHERE consumer_group = %s", (group,))

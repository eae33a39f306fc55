"""Subscription behaviour the seed report got wrong: a pattern that finds topics created later
(never a -dlq twin), a group that exists, and a loop that does not end when the topic goes quiet."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient

pytestmark = pytest.mark.integration


def test_pattern_subscription_picks_up_topics_created_after_start_but_never_their_dlq(
    kit: Any,
    make_topic: Any,
    producer: Any,
    run_consumer: Any,
    pg: Any,
    key_prefix: str,
    read_topic: Any,
    kafka_servers: str,
) -> None:
    family = f"test.{uuid.uuid4().hex[:10]}"
    consumer = run_consumer("postgres", pattern=rf"^{re.escape(family)}\.[a-z]+$")
    group = consumer.env["CONSUMER_GROUP"]
    # Nothing matches yet: alive, in its group, honest about having no partitions.
    kit.eventually("the consumer joined its group", lambda: group in _groups(kafka_servers), 60)
    assert consumer.alive()
    assert consumer.health()[0] == 503

    first = make_topic(f"{family}.first")
    first_sent = producer(first, [kit.product(f"{key_prefix}a{i}", i) for i in range(30)])
    kit.eventually(
        "records of the new topic landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 30, 90
    )
    assert consumer.health()[0] == 200

    second = make_topic(f"{family}.second")
    producer(second, [kit.product(f"{key_prefix}b{i}", i) for i in range(20)])
    kit.eventually(
        "records of a second new topic landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 50, 90
    )

    # A poison record produces a dead letter in first-dlq; the consumer must not read it back.
    producer(first, [kit.Sent(b"bad", b"{", [("crawlstore.schema", b"crawlstore.product.v1")], None)])
    kit.eventually("dead letter written", lambda: len(read_topic(f"{first}-dlq")) == 1)
    time.sleep(5)  # more than the metadata refresh: a -dlq match would have been assigned by now
    assert consumer.metric("crawlstore_consumer_records_consumed_total") == 51
    assert "-dlq[" not in consumer.log_text()
    rows = kit.pg_rows(pg, "products", key_prefix)
    assert {(r["kafka_topic"], r["kafka_offset"]) for r in rows.values() if r["kafka_topic"] == first} == {
        (first, s.offset) for s in first_sent
    }
    assert consumer.stop() == 0


def _groups(servers: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        return {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()


def test_idle_longer_than_any_timeout_then_new_records_are_consumed(
    kit: Any, topic: str, producer: Any, run_consumer: Any, pg: Any, key_prefix: str
) -> None:
    consumer = run_consumer("postgres", topics=topic)
    consumer.wait_healthy()
    producer(topic, [kit.product(f"{key_prefix}before{i}", i) for i in range(10)])
    kit.eventually("first records landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 10)
    # Longer than the session timeout (15 s), the seed's 10 s consumer timeout, metadata refreshes
    # and every batch timer.
    time.sleep(40)
    assert consumer.alive() and consumer.health()[0] == 200
    producer(topic, [kit.product(f"{key_prefix}after{i}", i) for i in range(10)])
    kit.eventually(
        "records after the quiet spell landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 20
    )
    assert consumer.stop() == 0

"""A topic deleted and re-created under a consumer: the sinks that keep their own position
(PostgreSQL's kafka_offsets, HDFS's file names) store the topic id beside it, see the new id, say
so and read the new log from its start; without an id to compare, they stop and say why, instead
of resuming past the new log's end and skipping its records without a word."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

pytestmark = pytest.mark.integration


def recreate(kafka_servers: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    try:
        admin.delete_topics([topic, f"{topic}-dlq"])
        deadline = time.monotonic() + 60
        while True:
            try:
                admin.create_topics([NewTopic(topic, 1, 1), NewTopic(f"{topic}-dlq", 1, 1)])
                return
            except (TopicAlreadyExistsError, UnknownTopicOrPartitionError):  # deletion still under way
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        admin.close()


def twenty_stored(
    sink: str, kit: Any, make_topic: Any, producer: Any, run_consumer: Any, make_store: Any, key_prefix: str
) -> tuple[str, Any, Any]:
    """A one-partition topic with 20 records (keys <prefix>old0..19) that the sink stored; the
    consumer is stopped cleanly, its position after them."""
    topic = make_topic(partitions=1)
    store = make_store(sink, topic, key_prefix)
    consumer = run_consumer(sink, topics=topic, **store.env)
    producer(topic, [kit.product(f"{key_prefix}old{i}", i) for i in range(20)])
    kit.eventually("the first 20 stored", lambda: len(store.records()) == 20)
    assert consumer.stop() == 0
    return topic, store, consumer


@pytest.mark.parametrize("new_records", [5, 25])  # fewer than the old position, and more
@pytest.mark.parametrize("sink", ["postgres", "opensearch", "hdfs"])
def test_a_re_created_topic_is_read_from_its_start_and_says_so(
    sink: str,
    new_records: int,
    kit: Any,
    make_topic: Any,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    key_prefix: str,
    kafka_servers: str,
) -> None:
    fixtures = (kit, make_topic, producer, run_consumer, make_store, key_prefix)
    topic, store, consumer = twenty_stored(sink, *fixtures)
    old = {f"{key_prefix}old{i}" for i in range(20)}

    recreate(kafka_servers, topic)
    new = {f"{key_prefix}new{i}" for i in range(new_records)}
    producer(topic, [kit.product(key, i) for i, key in enumerate(sorted(new))])
    consumer.start()
    kit.eventually("every record of the new log stored", lambda: {r["key"] for r in store.records()} >= new)
    assert consumer.alive()
    records = store.records()
    assert sorted(r["key"] for r in records) == sorted(old | new)  # the old log's records kept, each once
    assert sorted(r["offset"] for r in records if r["key"] in new) == list(range(new_records))
    if sink != "opensearch":  # it keeps no position of its own: Kafka dropped the deleted topic's
        assert f"TOPIC RE-CREATED: {topic}[0]" in consumer.log_text()


@pytest.mark.parametrize("sink", ["postgres", "hdfs"])
def test_offsets_stored_without_a_topic_id_that_go_backwards_stop_the_consumer_with_the_reason(
    sink: str,
    kit: Any,
    make_topic: Any,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    key_prefix: str,
    kafka_servers: str,
    pg: Any,
    webhdfs: Any,
) -> None:
    """Positions written before topic ids were kept (or a log truncated under the same id): the
    consumer cannot tell a new log from a lost one, so it stops rather than skip anything."""
    fixtures = (kit, make_topic, producer, run_consumer, make_store, key_prefix)
    topic, store, consumer = twenty_stored(sink, *fixtures)
    if sink == "postgres":  # as an older version of the sink left them
        with pg.cursor() as cur:
            cur.execute("UPDATE kafka_offsets SET topic_id = NULL WHERE topic = %s", (topic,))
        pg.commit()
    else:
        root = store.env["CONSUMER_HDFS_ROOT"]
        webhdfs.delete(f"{root}/+topics/{topic}")

    recreate(kafka_servers, topic)
    producer(topic, [kit.product(f"{key_prefix}new{i}", i) for i in range(5)])
    consumer.start()
    assert consumer.wait_exit(120) == 2  # EXIT_FATAL: stopped on purpose, with the reason
    log = consumer.log_text()
    assert f"offsets went backwards: {topic}[0] resumes at 20 but ends at 5" in log
    assert "nothing was read" in log
    assert {r["key"] for r in store.records()} == {f"{key_prefix}old{i}" for i in range(20)}

"""A topic deleted and re-created under a sink that keeps its own position (PostgreSQL's
kafka_offsets, HDFS's file names): the consumer stops and says why, instead of resuming past
the new log's end and skipping its records without a word."""

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


@pytest.mark.parametrize("sink", ["postgres", "hdfs"])
def test_a_re_created_topic_stops_the_consumer_with_the_reason(
    sink: str,
    kit: Any,
    make_topic: Any,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    key_prefix: str,
    kafka_servers: str,
) -> None:
    topic = make_topic(partitions=1)
    store = make_store(sink, topic, key_prefix)
    consumer = run_consumer(sink, topics=topic, **store.env)
    producer(topic, [kit.product(f"{key_prefix}old{i}", i) for i in range(20)])
    kit.eventually("the first 20 stored", lambda: len(store.records()) == 20)
    assert consumer.stop() == 0

    recreate(kafka_servers, topic)
    producer(topic, [kit.product(f"{key_prefix}new{i}", i) for i in range(5)])
    consumer.start()
    assert consumer.wait_exit(120) == 2  # EXIT_FATAL: stopped on purpose, with the reason
    log = consumer.log_text()
    assert f"offsets went backwards: {topic}[0] resumes at 20 but ends at 5" in log
    assert "nothing was read" in log
    assert {r["key"] for r in store.records()} == {f"{key_prefix}old{i}" for i in range(20)}

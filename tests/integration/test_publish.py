"""Publishing through the Kafka provider's connection: every delivery counted, any failure fails."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from crawlstore.messages import OutgoingRecord
from crawlstore.producer import PublishFailed, check_topics, produce_all
from crawlstore.publish import PipelineProducerHook

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(stack_env: dict[str, str]) -> Iterator[str]:
    name = f"test.publish.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
    admin.create_topics([NewTopic(name, 3, 1)])
    yield name
    admin.delete_topics([name])
    admin.close()


def read_all(servers: str, topic: str, expected: int) -> list:  # type: ignore[type-arg]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    out = []
    for message in consumer:
        out.append(message)
        if len(out) == expected:
            break
    consumer.close()
    return out


def test_publishes_every_record_with_key_and_headers(stack_env: dict[str, str], topic: str) -> None:
    producer = PipelineProducerHook(kafka_config_id="kafka_default").get_producer()
    check_topics(producer, [topic])
    records = [
        OutgoingRecord(
            topic,
            f"id-{i}".encode(),
            json.dumps({"n": i}).encode(),
            1_700_000_000_000 + i,
            [("crawlstore.run_id", b"run-1")],
        )
        for i in range(2_000)
    ]
    report = produce_all(producer, records)
    assert (report.sent, report.delivered, report.failed) == (2_000, 2_000, 0)
    assert sum(report.by_partition.values()) == 2_000 and len(report.by_partition) == 3
    got = read_all(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topic, 2_000)
    assert sorted(m.key for m in got) == sorted(r.key for r in records)
    assert all(m.headers == [("crawlstore.run_id", b"run-1")] for m in got)
    first = next(m for m in got if m.key == b"id-7")
    assert json.loads(first.value) == {"n": 7} and first.timestamp == 1_700_000_000_007


def test_same_key_same_partition(stack_env: dict[str, str], topic: str) -> None:
    producer = PipelineProducerHook(kafka_config_id="kafka_default").get_producer()
    records = [OutgoingRecord(topic, b"same-key", str(i).encode(), None, []) for i in range(20)]
    report = produce_all(producer, records)
    assert len(report.by_partition) == 1
    got = read_all(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topic, 20)
    assert [m.value for m in got] == [str(i).encode() for i in range(20)]  # per-key order kept


def test_connection_cannot_turn_off_idempotence_or_acks_all(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.providers.apache.kafka.hooks.produce as produce_module

    seen: list[dict[str, object]] = []
    real_producer = produce_module.Producer

    def recording_producer(config: dict[str, object]) -> object:
        seen.append(dict(config))
        return real_producer(config)

    monkeypatch.setattr(produce_module, "Producer", recording_producer)
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_LAX",
        json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    "bootstrap.servers": "127.0.0.1:9092",
                    "acks": "0",
                    "enable.idempotence": False,
                    "linger.ms": 5,
                },
            }
        ),
    )
    PipelineProducerHook(kafka_config_id="kafka_lax").get_producer()
    assert seen[0]["acks"] == "all" and seen[0]["enable.idempotence"] is True
    assert seen[0]["linger.ms"] == 5  # tuning from the connection is kept
    assert seen[0]["compression.type"] == "lz4"


def test_unreachable_kafka_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real client against a port where no broker listens: what a stopped Kafka looks like.
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DOWN",
        json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 3000}}
        ),
    )
    producer = PipelineProducerHook(kafka_config_id="kafka_down").get_producer()
    with pytest.raises(PublishFailed, match="Kafka is unreachable"):
        check_topics(producer, ["crawl.products"], timeout_s=3)
    records = [OutgoingRecord("crawl.products", b"k", b"{}", None, []) for _ in range(5)]
    with pytest.raises(PublishFailed, match=r"5 of 5 message\(s\) not delivered"):
        produce_all(producer, records, flush_timeout_s=15)


def test_missing_topic_fails_before_producing() -> None:
    producer = PipelineProducerHook(kafka_config_id="kafka_default").get_producer()
    with pytest.raises(PublishFailed, match="do not exist"):
        check_topics(producer, ["crawl.no-such-topic"])

"""Produce pipeline messages to Kafka and fail loudly when any delivery fails (no Airflow here).

The Kafka provider's ProduceToTopicOperator reports success even when deliveries fail; here every
delivery report is awaited and counted, and a single failed one fails the caller. Used by the
crawl DAG's tasks (through the Airflow hook in crawlstore.publish, which supplies the connection)
and by the DLQ replay (settings from KAFKA_* env vars).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crawlstore.messages import OutgoingRecord
from crawlstore.settings import KafkaSettings

log = logging.getLogger(__name__)

# Tuning a connection's extra may override; idempotence and acks=all may not.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 25,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "message.timeout.ms": 60_000,
    "client.id": "crawlstore-publisher",
}
PRODUCER_ENFORCED: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
PROGRESS_EVERY_S = 5.0


def producer_config(config: dict[str, Any]) -> dict[str, Any]:
    """A librdkafka producer config: our defaults, then `config`, then what may not be changed."""
    return {**PRODUCER_DEFAULTS, **config, **PRODUCER_ENFORCED}


def pipeline_producer(kafka: KafkaSettings | None = None) -> Any:
    """An idempotent, batching producer for KAFKA_BOOTSTRAP_SERVERS."""
    from confluent_kafka import Producer

    kafka = kafka or KafkaSettings()
    return Producer(producer_config({"bootstrap.servers": kafka.bootstrap_servers}))


class PublishFailed(RuntimeError):
    """Kafka did not take every message; the message says how many and why."""


@dataclass
class PublishReport:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    by_topic: Counter[str] = field(default_factory=Counter)
    by_partition: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"delivered {self.delivered}/{self.sent} in {self.seconds:.1f}s ({self.rate:,.0f} msg/s), "
            f"failed {self.failed}, by topic {dict(self.by_topic)}"
        )


def check_topics(producer: Any, topics: Iterable[str], timeout_s: float = 15.0) -> None:
    """Fail fast, with the reason, when Kafka is unreachable or a topic is missing."""
    from confluent_kafka import KafkaException

    try:
        metadata = producer.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise PublishFailed(f"Kafka is unreachable: {exc.args[0].str()} (waited {timeout_s:.0f}s)") from exc
    missing = sorted(set(topics) - set(metadata.topics))
    if missing:
        raise PublishFailed(
            f"topic(s) {missing} do not exist on the cluster (run `python -m crawlstore.init`)"
        )


def produce_all(
    producer: Any, records: Iterable[OutgoingRecord], *, flush_timeout_s: float = 120.0
) -> PublishReport:
    """Produce every record, wait for every delivery report; raise PublishFailed if any failed."""
    report = PublishReport()
    first_errors: list[str] = []
    t0 = last_progress = time.monotonic()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            report.failed += 1
            report.errors[err.str()] += 1
            if len(first_errors) < 5:
                first_errors.append(f"{msg.topic()} key={msg.key()!r}: {err.str()}")
        else:
            report.delivered += 1
            report.by_topic[msg.topic()] += 1
            report.by_partition[f"{msg.topic()}[{msg.partition()}]"] += 1

    for record in records:
        while True:
            try:
                producer.produce(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    headers=record.headers,
                    timestamp=record.timestamp_ms or 0,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # local queue full: let deliveries drain, then retry this record
                producer.poll(0.5)
        report.sent += 1
        producer.poll(0)
        if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            last_progress = time.monotonic()
            log.info(
                "published %d, delivered %d, failed %d (%.0f msg/s)",
                report.sent,
                report.delivered,
                report.failed,
                report.delivered / (last_progress - t0),
            )
    remaining = producer.flush(flush_timeout_s)
    report.seconds = time.monotonic() - t0
    if remaining or report.failed:
        lost = remaining + report.failed
        raise PublishFailed(
            f"{lost} of {report.sent} message(s) not delivered "
            f"({report.failed} failed, {remaining} still queued after {flush_timeout_s:.0f}s): "
            f"{dict(report.errors)}; first: {first_errors}"
        )
    log.info("%s", report.summary())
    return report

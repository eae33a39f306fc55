"""Produce pipeline messages to Kafka and fail loudly when any delivery fails (no Airflow here).

The Kafka provider's ProduceToTopicOperator reports success even when deliveries fail; here every
delivery report is awaited and counted, and a single failed one fails the caller. Used by the
crawl DAG's tasks (through the Airflow hook in crawlstore.publish, which supplies the connection)
and by the DLQ replay (settings from KAFKA_* env vars).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crawlstore.messages import OutgoingRecord
from crawlstore.settings import KafkaSettings
from crawlstore.topics import PUBLISH_LOG

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
CLIENT_AUTH = ("security.", "sasl.", "ssl.")
# How long the broker keeps a transaction open that its producer abandoned (a killed worker):
# until then read_committed consumers of its topics wait behind it. A retry ends it at once.
TRANSACTION_TIMEOUT_MS = 300_000


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
    already_published: int = 0  # a retry found its run published: nothing sent

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


# --------------------------------------------------------------------------- exactly once per run


def transactional_config(run_key: str) -> dict[str, Any]:
    """Producer settings for publish_once: the transactional id is the same for every attempt of
    one run, so a new attempt fences the attempts before it."""
    return {
        "transactional.id": "crawlstore-publish-" + hashlib.sha256(run_key.encode()).hexdigest()[:32],
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


def reader_config(client: dict[str, Any]) -> dict[str, Any]:
    """A read_committed consumer config for the cluster (and credentials) of a producer config."""
    wanted = {k: v for k, v in client.items() if k == "bootstrap.servers" or k.startswith(CLIENT_AUTH)}
    return {
        **wanted,
        "group.id": "crawlstore-publish-log-reader",  # never joins: it assigns and never commits
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }


def find_marker(config: dict[str, Any], run_key: str, since_ms: int, timeout_s: float = 90.0) -> Any:
    """The publish log's committed record of `run_key` written at or after since_ms, or None.

    Reads to the log's end as it was when asked. Another run's transaction still open there (its
    worker killed between marker and commit) holds the read back until it is resolved: aborted
    by that run's retry, or by the broker after TRANSACTION_TIMEOUT_MS.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(config)
    try:
        partition = TopicPartition(PUBLISH_LOG, 0, since_ms)
        [start] = consumer.offsets_for_times([partition], timeout=timeout_s)
        if start.error is not None:
            raise PublishFailed(f"cannot read {PUBLISH_LOG}: {start.error}")
        _, end = consumer.get_watermark_offsets(TopicPartition(PUBLISH_LOG, 0), timeout=timeout_s)
        if start.offset < 0 or start.offset >= end:  # nothing written since then
            return None
        consumer.assign([start])
        found, deadline = None, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise PublishFailed(f"cannot read {PUBLISH_LOG}: {error.str()}")
                if (msg.offset() or 0) >= end:
                    return found
                continue  # at the end of what is committed, short of the end: a transaction is open
            if msg.key() == run_key.encode():
                found = json.loads(msg.value() or b"{}")
        raise PublishFailed(
            f"{PUBLISH_LOG} not read to offset {end} within {timeout_s:.0f}s: a transaction stays open"
        )
    finally:
        consumer.close()


def publish_once(
    producer: Any,
    reader: dict[str, Any],
    run_key: str,
    records: Iterable[OutgoingRecord],
    since_ms: int,
) -> PublishReport:
    """Publish a run's records exactly once, however often it is retried.

    `producer` is made with transactional_config(run_key). Initialising it fences every
    earlier attempt of the run and aborts the transaction one left open (a worker killed in the
    middle of its sends): read_committed consumers never see those records. The records and a
    marker in PUBLISH_LOG are committed in one transaction; an attempt that finds the marker
    (written since since_ms) sends nothing. Raises PublishFailed, with nothing committed, if any
    delivery fails.
    """
    producer.init_transactions(60)
    done = find_marker(reader, run_key, since_ms)
    if done is not None:
        log.info("run %s was published before (%s): nothing sent again", run_key, done)
        return PublishReport(already_published=int(done["records"]))
    producer.begin_transaction()
    try:
        report = produce_all(producer, records)
        marker = {"run": run_key, "records": report.delivered, "by_topic": dict(report.by_topic)}
        producer.produce(PUBLISH_LOG, key=run_key.encode(), value=json.dumps(marker).encode())
        producer.commit_transaction(60)
    except BaseException:
        try:
            producer.abort_transaction(30)
        except Exception:
            log.exception("aborting the transaction of %s failed (the next attempt aborts it)", run_key)
        raise
    log.info("committed the transaction of %s: %d record(s)", run_key, report.delivered)
    return report

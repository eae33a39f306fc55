"""Three Kafka brokers, one killed while records flow: nothing lost, nothing doubled, it rejoins.

The cluster is the stack's own three-broker layout (stack/nativestack.py, `make up
KAFKA_BROKERS=3`) on other ports, under a supervisord of its own, so the one-broker stack the
other tests use keeps running. Topics get replication factor 3 and min.insync.replicas 2; the
publisher is the pipeline's (idempotent, acks=all); the consumers are the real ones, writing to
the stack's PostgreSQL, OpenSearch and HDFS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient

from crawlstore.init import create_topics
from crawlstore.messages import encode_item
from crawlstore.producer import pipeline_producer, produce_all
from crawlstore.settings import KafkaSettings
from crawlstore.topics import TopicSpec, twin_specs

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BASE_PORT = 19092
RECORDS = 10_000  # the 100,000 take minutes per store on these 2 cores; the same fault
SINKS = ("postgres", "opensearch", "hdfs")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, native_stack: ModuleType) -> Iterator[Any]:
    stack = native_stack
    base = tmp_path_factory.mktemp("kafka3")
    kafka = stack.kafka.KafkaCluster(3, BASE_PORT, base / "data", base / "conf")
    supervisor = stack.supervision.Supervisor(base, stack.base.SUPERVISOR.venv, base / "run", base / "logs")
    for d in ("run", "logs"):
        (base / d).mkdir()
    kafka.format(base / "logs" / "format.log")
    supervisor.ensure(kafka.programs(), dict(os.environ))
    try:
        for name in kafka.names:
            supervisor.start(name)
        deadline = time.monotonic() + 180
        while not (kafka.ready() and len(brokers(kafka.bootstrap)) == 3):
            assert time.monotonic() < deadline, "the 3-broker cluster did not come up"
            time.sleep(1)
        yield kafka, supervisor
    finally:
        supervisor.shutdown()


def brokers(bootstrap: str) -> list[int]:
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=5000)
    except Exception:
        return []
    try:
        return sorted(b["broker_id"] for b in admin.describe_cluster()["brokers"])
    finally:
        admin.close()


def in_sync(bootstrap: str, topic: str) -> list[list[int]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=5000)
    try:
        [described] = admin.describe_topics([topic])
        partitions = sorted(described["partitions"], key=lambda p: p["partition_index"])
        return [sorted(p["isr_nodes"]) for p in partitions]
    finally:
        admin.close()


def test_a_broker_killed_mid_stream_loses_and_doubles_nothing_and_rejoins(
    cluster: Any,
    kit: Any,
    run_consumer: Any,
    make_store: Any,
    key_prefix: str,
) -> None:
    kafka, supervisor = cluster
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap, replication_factor=3, partitions=3)
    topic = f"test.rf3-{key_prefix.strip('-')}"
    create_topics(settings, [TopicSpec(topic, 3, {"min.insync.replicas": "2"}), *twin_specs(topic)])
    assert in_sync(kafka.bootstrap, topic) == [[1, 2, 3]] * 3

    stores = {}
    for sink in SINKS:
        stores[sink] = make_store(sink, topic, key_prefix)
        consumer = run_consumer(sink, topics=topic, start=False, batch_max_records=2000, **stores[sink].env)
        consumer.env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
        consumer.start().wait_healthy()

    items = [kit.product(f"{key_prefix}{i}", i) for i in range(RECORDS)]
    producer = pipeline_producer(settings)
    delivered: list[int] = []

    def publish() -> None:  # ~20 s of steady load; the kill lands in the middle
        for start in range(0, RECORDS, 500):
            chunk = (encode_item(i, topic, "test-rf3") for i in items[start : start + 500])
            delivered.append(produce_all(producer, chunk).delivered)
            time.sleep(1.0)

    writer = threading.Thread(target=publish, daemon=True)
    writer.start()
    time.sleep(6)
    victim = "kafka-2"
    assert writer.is_alive() and 0 < sum(delivered) < RECORDS
    os.kill(supervisor.info()[victim]["pid"], signal.SIGKILL)
    writer.join(240)
    assert sum(delivered) == RECORDS  # acks=all with two of three replicas: no send failed

    keys = sorted(i.key for i in items)
    for sink, store in stores.items():
        kit.eventually(f"every record in {sink}", lambda s=store: len(s.records()) >= RECORDS, 300)
        records = store.records()
        assert sorted(r["key"] for r in records) == keys, sink  # each once
        positions = [(r["partition"], r["offset"]) for r in records]
        assert len(set(positions)) == RECORDS, sink

    # supervisord restarted the killed broker; it caught up and is in sync again everywhere.
    assert supervisor.restarts().get(victim) == 1
    rejoined = lambda: in_sync(kafka.bootstrap, topic) == [[1, 2, 3]] * 3  # noqa: E731
    kit.eventually("the killed broker back in every ISR", rejoined, 120)


def test_switching_a_stack_with_data_to_three_brokers_is_refused_with_what_to_do(
    native_stack: ModuleType,
) -> None:
    done = subprocess.run(
        ["python3", "stack/nativestack.py", "up", "--kafka-brokers", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "make clean" in done.stderr and "KAFKA_BROKERS=3" in done.stderr, done.stderr
    assert native_stack.kafka.kafka_brokers() == 1  # still the one-broker stack

"""A store goes down under load: nothing is dead-lettered, everything lands once it is back.

These stop shared services of the native stack (PostgreSQL, OpenSearch, the HDFS DataNode) for
about twenty seconds, so they run after every other test (see conftest.py), and each restores its
service in a `finally`, with the stack script's own `up`.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pytest
import requests
from kafka import KafkaAdminClient

from crawlstore.settings import PostgresSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RECORDS = 2000
DOWN_S = 20


@contextmanager
def outage(stack: ModuleType, service: str) -> Iterator[None]:
    """Stop one process of the native stack; afterwards restore everything that was ready before.

    "Everything": stopping PostgreSQL also takes down Airflow's scheduler, dag-processor and
    triggerer (they exit when their metadata database refuses connections; supervisord restarts
    them, with backoff, until PostgreSQL is back).
    """
    env = stack.environment.stack_env()
    ready_before = {svc.name for svc in stack.services.SERVICES if svc.running() and svc.ready(env)}
    try:
        if service == "postgres":
            assert stack.postgres.pg_stop(), "PostgreSQL was not running"
        else:
            assert stack.base.stop_program(service), f"{service} was not running"
        yield
    finally:
        restore(stack, ready_before)


def restore(stack: ModuleType, ready_before: set[str]) -> None:
    env = stack.environment.stack_env()
    for svc in stack.services.SERVICES:
        if svc.name not in ready_before or (svc.running() and svc.ready(env)):
            continue
        alive = [p for p in svc.processes if stack.base.pid_of(p) is not None]
        if svc.name == "postgres" or not alive:
            # The script's own `up`: starts the service and re-runs the idempotent init.
            done = subprocess.run(
                ["python3", "stack/nativestack.py", "up", svc.name],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, f"could not restore {svc.name}:\n{done.stdout}\n{done.stderr}"
        else:
            # Half up (e.g. the NameNode without its DataNode): `up` would refuse because the
            # ports are taken; the service's start function spawns only the missing processes.
            svc.start(env)
            stack.wait_ready([svc], env)


def committed(servers: str, group: str) -> dict[Any, int]:
    """The group's committed offsets in Kafka."""
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        offsets = admin.list_group_offsets({group: None})
    finally:
        admin.close()
    found = offsets.get(group, offsets) if isinstance(offsets, dict) else offsets
    return {tp: int(getattr(o, "offset", o)) for tp, o in dict(found).items()}


@pytest.mark.parametrize(
    ("sink", "service"),
    [
        ("postgres", "postgres"),
        ("opensearch", "opensearch"),
        ("hdfs", "hdfs-datanode"),
    ],
)
def test_store_outage_under_load_dead_letters_nothing_and_everything_lands(
    sink: str,
    service: str,
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    read_topic: Any,
    pg_settings: PostgresSettings,
    native_stack: ModuleType,
    kafka_servers: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}-"  # not the key_prefix fixture: its connection dies with PostgreSQL
    store = make_store(sink, topic, prefix)
    consumer = run_consumer(sink, topics=topic, batch_max_records=200, retry_max_ms=3000, **store.env)
    consumer.wait_healthy()
    items = [kit.product(f"{prefix}{i}", i) for i in range(RECORDS)]
    sent: list[Any] = []

    def produce() -> None:  # ~40 s of steady load, across the outage
        for start in range(0, RECORDS, 50):
            sent.extend(producer(topic, items[start : start + 50]))
            time.sleep(1.0)

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    try:
        kit.eventually(
            "records landing before the outage",
            lambda: consumer.metric("crawlstore_consumer_records_written_total") > 0,
            60,
        )
        with outage(native_stack, service):
            kit.eventually(
                "the consumer noticed and retries",
                lambda: consumer.metric("crawlstore_consumer_retries_total") > 0,
                60,
            )
            time.sleep(2)  # the commit of the last batch written before the outage has arrived
            before = committed(kafka_servers, consumer.env["CONSUMER_GROUP"])
            time.sleep(DOWN_S)
            # Nothing could be written, so nothing was committed: the batch being retried was
            # polled, but its offsets are no transaction markers to pass.
            assert committed(kafka_servers, consumer.env["CONSUMER_GROUP"]) == before
            assert consumer.alive(), consumer.log_tail()
            status, health = consumer.health()
            assert status == 503 and health["state"] == "retrying", health
            assert consumer.metric("crawlstore_consumer_records_dead_lettered_total") == 0
        writer.join(timeout=300)
        assert len(sent) == RECORDS
        expected = {(s.partition, s.offset) for s in sent}
        kit.eventually(
            "everything landed after the store came back",
            lambda: {(r["partition"], r["offset"]) for r in store.records()} == expected,
            240,
        )
        records = store.records()
        assert len(records) == RECORDS  # no duplicate line, row or document
        assert read_topic(f"{topic}-dlq") == []
        assert consumer.metric("crawlstore_consumer_records_dead_lettered_total") == 0
        kit.eventually("healthy again", lambda: consumer.health()[0] == 200, 60)
        assert consumer.stop() == 0
        assert "store is back" in consumer.log_text()
    finally:
        writer.join(timeout=300)
        if sink == "postgres":
            with psycopg2.connect(**pg_settings.connect_kwargs()) as conn, conn.cursor() as cur:
                cur.execute("DELETE FROM products WHERE product_id LIKE %s", (prefix + "%",))
            conn.close()


def test_a_batch_retried_while_the_store_is_down_moves_no_committed_offset(
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    native_stack: ModuleType,
    kafka_servers: str,
) -> None:
    """One burst, then the DataNode goes: the consumer holds the burst and retries it, with nothing
    else to poll. Kafka's committed offset (the HDFS sink's floor on open) must stay where the
    files end until the burst is written, or a reopen would skip it."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    store = make_store("hdfs", topic, prefix)
    consumer = run_consumer("hdfs", topics=topic, retry_max_ms=2000, **store.env)
    group = consumer.env["CONSUMER_GROUP"]
    consumer.wait_healthy()
    sent = producer(topic, [kit.product(f"{prefix}{i}", i) for i in range(300)])
    kit.eventually("300 lines in HDFS", lambda: len(store.records()) == 300, 120)
    kit.eventually(
        "Kafka's committed offsets at the end",
        lambda: sum(committed(kafka_servers, group).values()) == 300,
        60,
    )
    before = committed(kafka_servers, group)
    with outage(native_stack, "hdfs-datanode"):
        sent += producer(topic, [kit.product(f"{prefix}{i}", i) for i in range(300, 400)])
        kit.eventually(
            "the consumer retries the burst",
            lambda: consumer.metric("crawlstore_consumer_retries_total") > 0,
            60,
        )
        time.sleep(8)
        assert committed(kafka_servers, group) == before
        assert consumer.alive(), consumer.log_tail()
    expected = {(s.partition, s.offset) for s in sent}

    def landed() -> bool:
        try:
            return {(r["partition"], r["offset"]) for r in store.records()} == expected
        except requests.ConnectionError:  # the DataNode's HTTP port is still coming up
            return False

    kit.eventually("the burst landed after the DataNode came back", landed, 240)
    assert len(store.records()) == 400
    assert consumer.stop() == 0

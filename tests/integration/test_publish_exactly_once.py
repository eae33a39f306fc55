"""publish_kafka killed in the middle of its sends, then retried, then re-run: each item once.

The stack's own consumers read crawl.products (read_committed), so the stores are checked too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from crawlstore import pipeline
from crawlstore.messages import H_RUN_ID
from crawlstore.settings import PostgresSettings

pytestmark = pytest.mark.integration
TOPIC = "crawl.products"
ITEMS = 2000
KILL_AFTER = 800  # records handed to the producer before the worker "dies"
GROUPS = ("crawlstore-postgres", "crawlstore-opensearch", "crawlstore-hdfs")


def of_run(servers: str, start: dict[TopicPartition, int], run_id: str, isolation: str) -> list[Any]:
    """This run's records in the topic since `start`, as a consumer of that isolation level sees them."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, isolation_level=isolation)
    try:
        partitions = list(start)
        end = consumer.end_offsets(partitions)  # read_committed: up to the last stable offset
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start[tp])
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                out += [m for m in batch if dict(m.headers).get(H_RUN_ID) == run_id.encode()]
        return out
    finally:
        consumer.close()


def test_a_publish_killed_mid_run_then_retried_lands_each_item_once_in_kafka_and_every_store(
    stack_env: dict[str, str],
    kit: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_settings: PostgresSettings,
    opensearch_url: str,
    webhdfs: Any,
) -> None:
    monkeypatch.setenv("CRAWLSTORE_DATA_DIR", str(tmp_path))
    servers = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    run_id = f"manual__eo_{uuid.uuid4().hex[:8]}"
    items = [kit.product(f"{run_id}-{i}", i) for i in range(ITEMS)]
    keys = {i.product_id for i in items}
    crawled = tmp_path / "items.jsonl"
    crawled.write_text("".join(i.model_dump_json() + "\n" for i in items))
    validated = pipeline.validate("demo_shop", run_id, {"items_path": str(crawled), "items": ITEMS})
    assert validated["valid"] == ITEMS

    probe = KafkaConsumer(bootstrap_servers=servers)
    partitions = [TopicPartition(TOPIC, p) for p in sorted(probe.partitions_for_topic(TOPIC) or ())]
    start = probe.end_offsets(partitions)
    probe.close()

    # Attempt 1: a worker that dies (kill -9) after handing KILL_AFTER records to the producer.
    script = textwrap.dedent(
        f"""
        import time
        import crawlstore.messages as messages
        from crawlstore import pipeline

        encode, sent = messages.encode_item, [0]

        def encode_then_die(*args):
            sent[0] += 1
            if sent[0] == {KILL_AFTER}:
                print("PARTIAL", flush=True)
                time.sleep(600)
            return encode(*args)

        messages.encode_item = encode_then_die
        pipeline.publish_kafka("demo_shop", {run_id!r}, {validated!r})
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, **stack_env, "CRAWLSTORE_DATA_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    try:
        lines = iter(worker.stdout.readline, "")
        assert any(line.strip() == "PARTIAL" for line in lines), "the worker ended before its kill"
        time.sleep(3)  # the producer's batches reach the broker (linger 25 ms)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
    partial = of_run(servers, start, run_id, "read_uncommitted")
    assert 0 < len(partial) < KILL_AFTER  # really in the log, inside the open transaction
    assert of_run(servers, start, run_id, "read_committed") == []

    # Attempt 2 (Airflow's retry): fences attempt 1, aborts its transaction, publishes everything.
    retried = pipeline.publish_kafka("demo_shop", run_id, validated)
    assert (retried["published"], retried["already_published"]) == (ITEMS, 0)
    # Attempt 3 (the task cleared and run again after it succeeded): nothing is sent.
    again = pipeline.publish_kafka("demo_shop", run_id, validated)
    assert (again["published"], again["already_published"]) == (0, ITEMS)

    committed = of_run(servers, start, run_id, "read_committed")
    assert sorted(m.key.decode() for m in committed) == sorted(keys)  # each once
    everything = of_run(servers, start, run_id, "read_uncommitted")
    assert len(everything) == ITEMS + len(partial)  # the aborted sends stay in the log, unseen

    # The stack's consumers (read_committed) store each item once.
    def pg_keys() -> list[str]:
        with psycopg2.connect(**pg_settings.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("SELECT product_id FROM products WHERE product_id LIKE %s", (run_id + "-%",))
            found = [r[0] for r in cur.fetchall()]
        conn.close()
        return found

    def os_count() -> int:
        requests.post(f"{opensearch_url}/crawl-products/_refresh", timeout=30)
        query = {"query": {"ids": {"values": sorted(keys)}}}
        r = requests.get(f"{opensearch_url}/crawl-products/_count", json=query, timeout=30)
        return int(r.json()["count"]) if r.status_code == 200 else 0

    def hdfs_keys() -> list[str]:
        lines = kit.jsonl_lines(webhdfs.files("/crawlstore/topics", TOPIC))
        return [line["product_id"] for line in lines if line["product_id"].startswith(run_id + "-")]

    kit.eventually("every item in PostgreSQL", lambda: len(pg_keys()) == ITEMS, 120)
    kit.eventually("every item in OpenSearch", lambda: os_count() == ITEMS, 120)
    kit.eventually("every item in HDFS", lambda: len(hdfs_keys()) >= ITEMS, 120)
    assert sorted(hdfs_keys()) == sorted(keys)  # HDFS keeps every line: none twice

    # Each transaction ends with a marker offset no consumer sees: the groups commit past it.
    def lag() -> dict[str, int]:
        probe = KafkaConsumer(bootstrap_servers=servers)
        admin = KafkaAdminClient(bootstrap_servers=servers)
        try:
            end = probe.end_offsets(partitions)
            lags = {}
            for group in GROUPS:
                committed = admin.list_group_offsets(group).get(group, {})
                lags[group] = sum(end[tp] - committed[tp].offset for tp in partitions)
            return lags
        finally:
            probe.close()
            admin.close()

    kit.eventually("the stack's consumer groups at the end of the topic", lambda: not any(lag().values()), 60)

"""`make demo`: crawl the bundled demo site into Kafka and all three stores, then say what landed where.

Runs the crawl DAGs on the running Airflow through its REST API (as a user would from the UI),
waits until the three consumer groups have caught up, and prints counts from each store and the
dead-letter topics, with the commands to look for yourself.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

import psycopg2
import pyarrow.parquet as pq
import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from psycopg2 import sql

from consumers.hdfs import HdfsSink
from consumers.opensearch import index_name
from consumers.postgres_schema import TableSpec
from consumers.settings import ConsumerSettings
from crawlstore.config import current
from crawlstore.connectors import CONSUMER_GROUPS
from crawlstore.dlq import failure_context
from crawlstore.settings import (
    HdfsSettings,
    KafkaSettings,
    OpenSearchSettings,
    PageSettings,
    PostgresSettings,
)
from crawlstore.sources import SOURCES
from crawlstore.topics import dlq_topic, parking_topic, pipeline_topics
from demo.airflow_api import AirflowApi

log = logging.getLogger("demo")
# Where the sinks put things by default.
HDFS_ROOT: str = ConsumerSettings.model_fields["hdfs_root"].default
INDEX_PREFIX: str = ConsumerSettings.model_fields["opensearch_index_prefix"].default


def group_lag(kafka: KafkaSettings) -> dict[str, int]:
    """Records each sink's consumer group has not committed yet, over the pipeline topics."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id="crawlstore-demo")
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        partitions = [
            TopicPartition(t, p) for t in pipeline_topics() for p in consumer.partitions_for_topic(t) or ()
        ]
        end = consumer.end_offsets(partitions)
        lag = {}
        for group in CONSUMER_GROUPS:
            committed = admin.list_group_offsets(group).get(group, {})
            lag[group] = sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
        return lag
    finally:
        consumer.close()
        admin.close()


def wait_for_consumers(kafka: KafkaSettings, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        lag = group_lag(kafka)
        if not any(lag.values()) or time.monotonic() > deadline:
            return lag
        log.info(
            "waiting for the consumers to catch up: %s", ", ".join(f"{g} lag {n}" for g, n in lag.items())
        )
        time.sleep(2)


def dead_letters(kafka: KafkaSettings, topic: str) -> Counter[str]:
    """Dead letters in `topic` by failing stage/sink and error kind."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        end = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        counts: Counter[str] = Counter()
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                for message in batch:
                    ctx = failure_context(message.headers)
                    counts[f"{ctx.connector or '?'}: {ctx.error_kind or ctx.exception_class}"] += 1
        return counts
    finally:
        consumer.close()


def hdfs_summary(hdfs: HdfsSink, topic: str) -> tuple[str, int, int]:
    """Where the topic's files are (its layout), how many are committed, and the records in them."""
    layout = hdfs.layout(topic)
    files = hdfs.committed_files(topic)
    records = 0
    for path, committed in files.items():
        content = hdfs.fs.read(path)
        if committed.format == "parquet":
            records += pq.read_metadata(io.BytesIO(content)).num_rows
        else:
            records += content.count(b"\n")
    return f"{layout.base}/{layout.day_before}<day>{layout.day_after}/", len(files), records


POLL_DEMO_S = 65  # how long the demo lets a polling source poll (past a minute: the demo API's step)


def run_crawls(api: AirflowApi, max_pages: int | None, timeout_s: float) -> dict[str, Any]:
    dag_ids = {f"crawl_{s.name}": s for s in SOURCES}
    api.wait_for_dags(list(dag_ids))
    results: dict[str, Any] = {}
    runs = {}
    for dag_id, source in dag_ids.items():
        if source.poll is not None:
            conf: dict[str, Any] = {"duration_s": POLL_DEMO_S}
        else:
            conf = {"max_pages": max_pages} if max_pages else {}
        runs[dag_id] = api.trigger_now(dag_id, conf=conf)
        log.info("triggered %s run %s", dag_id, runs[dag_id])
        api.unpause(dag_id)
    try:
        for dag_id, run_id in runs.items():
            if dag_ids[dag_id].poll is not None:
                # @continuous: once this run polls, pause the DAG so that no next run follows it.
                api.wait_for_task(dag_id, run_id, "poll", timeout_s=timeout_s)
                api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
        for dag_id, run_id in runs.items():
            state = api.wait_for_run(dag_id, run_id, timeout_s=timeout_s)
            if state != "success":
                raise SystemExit(
                    f"{dag_id} run {run_id} {state}: {api.task_states(dag_id, run_id)}; "
                    f"task logs in the Airflow UI or .stack/logs/airflow-tasks/dag_id={dag_id}/"
                )
            tasks = ("poll",) if dag_ids[dag_id].poll is not None else ("crawl", "validate", "publish_kafka")
            results[dag_id] = {task: api.xcom(dag_id, run_id, task) for task in tasks}
    finally:
        for dag_id in dag_ids:  # scheduled runs stay off: the demo decides when to crawl
            api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    return results


def report(results: dict[str, Any], lag: dict[str, int], kafka: KafkaSettings) -> None:
    pg, os_settings, hdfs = PostgresSettings(), OpenSearchSettings(), HdfsSettings()
    print("\n=== Crawled (Airflow runs) ===")
    for dag_id, r in results.items():
        if "poll" in r:
            p = r["poll"]
            print(
                f"{dag_id:<26} polled {p['polls']:>3} times: {p['items']:>4} items   valid {p['valid']:>5}   "
                f"invalid {p['invalid']:>3}   published {p['published']:>5}"
            )
            continue
        v = r["validate"]
        print(
            f"{dag_id:<26} crawled {r['crawl']['items']:>5}   valid {v['valid']:>5}   "
            f"invalid {v['invalid']:>3} "
            f"(dead-lettered {v['dead_lettered']})   published {r['publish_kafka']['published']:>5} "
            f"at {r['publish_kafka']['rate']:,.0f} msg/s"
        )
    print("\n=== Landed ===")
    kinds = list(current().kinds.values())
    with psycopg2.connect(**pg.connect_kwargs()) as conn, conn.cursor() as cur:
        for kind in kinds:
            table = TableSpec.for_kind(kind).table
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            print(f"PostgreSQL  {table:<26} {cur.fetchone()[0]:>6} rows")
    conn.close()
    for kind in kinds:
        index = index_name(INDEX_PREFIX, kind.kind)
        count = requests.get(f"{os_settings.url}/{index}/_count", timeout=10).json().get("count", 0)
        print(f"OpenSearch  {index:<26} {count:>6} documents")
    sink = HdfsSink(hdfs, root=HDFS_ROOT)
    try:
        for topic in pipeline_topics():
            where, files, records = hdfs_summary(sink, topic)
            fmt = sink.layout(topic).format
            print(f"HDFS        {where:<42} {files:>3} {fmt} file(s), {records:>5} records  ({topic})")
    finally:
        sink.stop()
    print(f"consumer lag: {', '.join(f'{g} {n}' for g, n in lag.items())}")
    print("\n=== Dead letters ===")
    for topic in pipeline_topics():
        for t in (dlq_topic(topic), parking_topic(topic)):
            counts = dead_letters(kafka, t)
            detail = ", ".join(f"{k} x{n}" for k, n in counts.most_common(6))
            print(f"{t:<28} {sum(counts.values()):>4}  {detail}")
    first, topic = current().kinds[SOURCES[0].kind], SOURCES[0].topic
    table = TableSpec.for_kind(first).table
    page = PageSettings()
    airflow = os.environ.get("AIRFLOW_API_URL", "http://127.0.0.1:8080")
    print(f"""
=== Look for yourself ===
Airflow UI       {airflow}
                   (user admin, password AIRFLOW_ADMIN_PASSWORD in .stack/env)
Pipeline page    {airflow}/plugin/pipeline
                   (each sink's lag, rate and health; dead letters by sink and reason, Replay)
PostgreSQL       set -a; . .stack/env; set +a
                 PGPASSWORD=$POSTGRES_PASSWORD psql -h 127.0.0.1 -U crawlstore crawlstore \\
                   -c 'SELECT {first.key_field}, kafka_offset, landed_at FROM {table} LIMIT 5'
OpenSearch       curl '{os_settings.url}/{index_name(INDEX_PREFIX, first.kind)}/_search?size=3&pretty'
HDFS             {hdfs.webhdfs_url}/explorer.html#{HDFS_ROOT}   (each topic's folder: above)
Kafka UI         {page.kafka_ui_url}   (topics; consumer groups with their lag)
                 {page.topic_url(dlq_topic(topic))}   (its records; Enter, → →: headers)
Kafka            kcat -b {kafka.bootstrap_servers} -C -t {topic} -o -3 -e -f '%t[%p]@%o %k %h\\n%s\\n'
Dead letters     kcat -b {kafka.bootstrap_servers} -C -t {dlq_topic(topic)} -e -f '%k\\n%h\\n\\n'
Consumers        curl http://127.0.0.1:9101/metrics   (9102 opensearch, 9103 hdfs)
Replay           docs/replay.md
Configuration    .venv/bin/python -m crawlstore.config check   (docs/configuration.md)""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--max-pages", type=int, default=None, help="listing pages to crawl (default: all)")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for each run and the consumers"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for chatty in ("kafka", "urllib3"):  # client libraries narrate every connection
        logging.getLogger(chatty).setLevel(logging.ERROR)
    kafka = KafkaSettings()
    api = AirflowApi(
        os.environ["AIRFLOW_API_URL"],
        os.environ.get("AIRFLOW_ADMIN_USER", "admin"),
        os.environ["AIRFLOW_ADMIN_PASSWORD"],
    )
    results = run_crawls(api, args.max_pages, args.timeout)
    lag = wait_for_consumers(kafka, args.timeout)
    report(results, lag, kafka)
    return 0 if not any(lag.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

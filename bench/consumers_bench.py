"""Sustained records/s of each consumer next to the raw ceiling of its store on the same data.

Not a test: a measurement on the native stack. For N items of ~1 KB on a fresh 3-partition topic:

- Kafka's own ceiling: `ConsumerPerformance` (the Java tool), and kafka-python polling alone;
- per sink, `python -m consumers <sink>` as a real process with its default batching, timed from
  10% to 90% of the records written (start-up and the last partial batch left out);
- the raw ceiling of the same store on the same rows/documents/lines: PostgreSQL COPY into
  `products` itself (deleted again before the consumer runs), OpenSearch `_bulk` from a plain
  client into an index with the same mapping, and one large WebHDFS write;
- --rounds times (default 3) on fresh data: a ceiling run, then the consumer; the median ratio counts;
- the CPU each side costs per record (the whole machine's busy time from /proc/stat, and the
  consumer processes' own), and from it the best rate that CPU allows on this machine.

    set -a; . .stack/env; set +a
    .venv/bin/python bench/consumers_bench.py [--records 100000] [--sinks postgres,hdfs] [--replicas 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from confluent_kafka import Consumer, Producer
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from consumers.batching import Decoded
from consumers.webhdfs import WebHdfs
from crawlstore.messages import Record, decode_item, encode_item
from crawlstore.settings import HdfsSettings, KafkaSettings, OpenSearchSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceilings import (
    CEILINGS,
    Measured,
    ProductItem,
    busy_cpu_s,
    ceiling_of,
    clear_products,
    process_cpu_s,
)

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"postgres": 19201, "opensearch": 19202, "hdfs": 19203}
CORES = os.cpu_count() or 1


def item(prefix: str, i: int, now: datetime) -> ProductItem:
    """A product whose JSON is about 1 KB."""
    return ProductItem(
        source="benchshop",
        crawled_at=now + timedelta(milliseconds=i),
        product_id=f"{prefix}{i}",
        name=f"Bench product {i} " + "with a long descriptive name " * 9,
        brand="Acme Industrial Supplies " * 3,
        category="tools/hand tools/screwdrivers/precision " * 2,
        price=Decimal("19.99") + i % 1000,
        sale_price=Decimal("9.99"),
        currency="EUR",
        url=f"https://shop.example/catalogue/tools/hand-tools/precision/{i}?ref=" + "x" * 150,
        image_url=f"https://cdn.shop.example/images/products/{i}/large.jpg?v=" + "y" * 150,
        rating=4.5,
        review_count=i % 5000,
    )


def produce(servers: str, topic: str, items: list[ProductItem]) -> list[Record]:
    """Publish like the pipeline's publisher (lz4, idempotent); returns the records as consumed."""
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "linger.ms": 25,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    records: list[Record] = []

    def delivered(out: Any) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                raise RuntimeError(err)
            records.append(
                Record(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    out.key,
                    out.value,
                    out.timestamp_ms,
                    tuple(out.headers),
                )
            )

        return on_delivery

    for it in items:
        out = encode_item(it, topic, "bench")
        while True:
            try:
                producer.produce(
                    topic,
                    key=out.key,
                    value=out.value,
                    headers=out.headers,
                    timestamp=out.timestamp_ms,
                    on_delivery=delivered(out),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    assert len(records) == len(items), f"delivered {len(records)} of {len(items)}"
    return records


def kafka_perf_tool(servers: str, topic: str, n: int) -> float:
    """nMsg/s of Kafka's ConsumerPerformance tool, fetch phase (rebalance excluded)."""
    java = shutil.which("java") or "java"
    jdk17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    if jdk17.exists():
        java = str(jdk17)
    out = subprocess.run(
        [
            java,
            "-cp",
            f"{ROOT}/.stack/lib/kafka/*",
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            servers,
            "--topic",
            topic,
            "--messages",
            str(n),
            "--timeout",
            "60000",
            "--group",
            f"bench-perf-{uuid.uuid4().hex[:6]}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    header, values = [line for line in out.splitlines() if line.strip() and not line.startswith("WARN")][-2:]
    row = dict(
        zip([h.strip() for h in header.split(",")], [v.strip() for v in values.split(",")], strict=False)
    )
    return float(row.get("fetch.nMsg.sec") or row["nMsg.sec"])


def kafka_python_poll(servers: str, topic: str, n: int) -> Measured:
    """records/s of kafka-python's poll() alone (the consumers' client, no decoding or writing)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"bench-poll-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    got, start, cpu, machine = 0, 0.0, 0.0, 0.0
    while got < n:
        batch = consumer.poll(timeout_ms=1000, max_records=2000)
        if batch and not start:
            start, cpu, machine = time.monotonic(), time.process_time(), busy_cpu_s()
        got += sum(len(v) for v in batch.values())
    elapsed = time.monotonic() - start
    result = Measured(n / elapsed, (busy_cpu_s() - machine) / n * 1e6, (time.process_time() - cpu) / n * 1e6)
    consumer.close()
    return result


def librdkafka_poll(servers: str, topic: str, n: int) -> Measured:
    """The same with confluent-kafka (librdkafka), for comparison: not the consumers' client."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"bench-rdpoll-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got, start, cpu, machine = 0, 0.0, 0.0, 0.0
    while got < n:
        batch = consumer.consume(num_messages=2000, timeout=1.0)
        if batch and not start:
            start, cpu, machine = time.monotonic(), time.process_time(), busy_cpu_s()
        # What a consumer would touch of each record.
        got += sum(1 for m in batch if m.error() is None and m.value() is not None and m.headers())
    elapsed = time.monotonic() - start
    result = Measured(n / elapsed, (busy_cpu_s() - machine) / n * 1e6, (time.process_time() - cpu) / n * 1e6)
    consumer.close()
    return result


def decode_only(records: list[Record]) -> float:
    start = time.monotonic()
    for r in records:
        decode_item(r)
    return len(records) / (time.monotonic() - start)


def free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def metric(port: int, name: str) -> float:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return -1.0
    m = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def run_sink(sink: str, topic: str, n: int, env: dict[str, str], replicas: int = 1) -> Measured:
    """`python -m consumers <sink>` (R replicas in one group), from 10% to 90% of the records written."""
    ports = [PORTS[sink] + 10 * i for i in range(replicas)]
    assert all(free(p) for p in ports), f"ports {ports} busy"
    group = f"bench-{sink}-{uuid.uuid4().hex[:6]}"
    procs = []
    for i, port in enumerate(ports):
        full = {
            **os.environ,
            **env,
            "CONSUMER_TOPICS": topic,
            "CONSUMER_GROUP": group,
            "CONSUMER_METRICS_PORT": str(port),
            "CONSUMER_PROGRESS_INTERVAL_S": "10",
            "CONSUMER_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        }
        log = open(f"/tmp/bench-{sink}-{i}.log", "wb")  # noqa: SIM115 (closed below)
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "consumers", sink],
                    cwd=ROOT,
                    env=full,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    marks: dict[float, tuple[float, float, float, float]] = {}  # fraction -> time, written, CPU s
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p, _ in procs):
            written = sum(
                max(0.0, metric(port, "crawlstore_consumer_records_written_total")) for port in ports
            )
            now = time.monotonic()
            for frac in (0.1, 0.9):
                if frac not in marks and written >= frac * n:
                    own = sum(process_cpu_s(p.pid) for p, _ in procs)
                    marks[frac] = (now, written, busy_cpu_s(), own)
            if written >= n:
                break
            time.sleep(0.05)
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    if len(marks) < 2:
        raise RuntimeError(f"{sink} consumer did not finish; see /tmp/bench-{sink}-*.log")
    (t10, w10, m10, c10), (t90, w90, m90, c90) = marks[0.1], marks[0.9]
    records = w90 - w10
    return Measured(records / (t90 - t10), (m90 - m10) / records * 1e6, (c90 - c10) / records * 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--sinks", default="postgres,opensearch,hdfs")
    parser.add_argument("--replicas", type=int, default=1, help="consumer processes per sink, one group")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of (ceiling, consumer) on fresh data; the median ratio counts",
    )
    args = parser.parse_args()
    n, sinks = args.records, args.sinks.split(",")
    servers = KafkaSettings().bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=servers)
    results: dict[str, list[tuple[Measured, Measured]]] = {sink: [] for sink in sinks}
    poll: Measured | None = None
    try:
        for round_no in range(1, args.rounds + 1):
            run = uuid.uuid4().hex[:8]
            topic, prefix = f"bench.{run}", f"bench{run}-"
            admin.create_topics([NewTopic(topic, 3, 1), NewTopic(f"{topic}-dlq", 1, 1)])
            try:
                now = datetime.now(UTC)
                t0 = time.monotonic()
                records = produce(servers, topic, [item(prefix, i, now) for i in range(n)])
                size = sum(len(r.value or b"") for r in records) / n
                elapsed = time.monotonic() - t0
                print(
                    f"round {round_no}: {n} records of {size:.0f} bytes on {topic} (3 partitions), "
                    f"produced in {elapsed:.1f}s"
                )
                decoded = [Decoded(r, decode_item(r)) for r in records]
                if poll is None:
                    poll = compare_clients(servers, topic, n, records)
                for sink in sinks:
                    ceiling = ceiling_of(sink, decoded, prefix)
                    rate = run_sink(sink, topic, n, sink_env(sink, run, n), args.replicas)
                    results[sink].append((rate, ceiling))
                    print(
                        f"  {sink:<11} consumer {rate.per_s:>8,.0f}/s ({rate.machine_us:.0f} µs CPU/record, "
                        f"{rate.client_us or 0:.0f} in the consumer)   "
                        f"{CEILINGS[sink]} {ceiling.per_s:>8,.0f}/s "
                        f"({ceiling.machine_us:.0f} µs CPU/record)   ratio {rate.per_s / ceiling.per_s:6.1%}"
                    )
            finally:
                admin.delete_topics([topic, f"{topic}-dlq"])
                cleanup(prefix, f"bench-{run}-", f"/bench/{run}")
    finally:
        admin.close()
    assert poll is not None
    print()
    print(
        f"{n:,} records, {args.replicas} consumer process(es) per sink; each sink's round with the median "
        f"ratio of {args.rounds}"
    )
    print(
        f"{'sink':<11}{'consumer/s':>11}{'ceiling/s':>11}{'ratio':>7}{'  ratios seen':<22}"
        f"{'CPU µs/rec':>11}{'of which':>10}{'ceiling':>9}{'CPU bound/s':>13}{'ratio':>7}"
        f"{'poll bound':>12}  ceiling"
    )
    for sink, rounds in results.items():
        ratios = sorted(rate.per_s / ceiling.per_s for rate, ceiling in rounds)
        rate, ceiling = sorted(rounds, key=lambda rc: rc[0].per_s / rc[1].per_s)[len(rounds) // 2]
        seen = "  " + ", ".join(f"{r:.0%}" for r in ratios)
        # If the store needs what it needs in the ceiling run and the consumer adds its own CPU,
        # the machine's cores cannot do more than this, however well the two overlap.
        bound = CORES * 1e6 / (ceiling.machine_us + (rate.client_us or 0))
        floor = CORES * 1e6 / (ceiling.machine_us + (poll.client_us or 0))
        print(
            f"{sink:<11}{rate.per_s:>11,.0f}{ceiling.per_s:>11,.0f}"
            f"{rate.per_s / ceiling.per_s:>7.0%}{seen:<22}"
            f"{rate.machine_us:>11.0f}{rate.client_us or 0:>10.0f}{ceiling.machine_us:>9.0f}"
            f"{min(bound, ceiling.per_s):>13,.0f}{min(bound, ceiling.per_s) / ceiling.per_s:>7.0%}"
            f"{min(floor, ceiling.per_s) / ceiling.per_s:>12.0%}  {CEILINGS[sink]}"
        )
    print(
        "ratios seen: consumer / ceiling of each round "
        "(a ceiling run, then the consumer, on the same fresh data).\n"
        "CPU µs/rec: whole machine during the consumer run, of which in the consumer process(es); "
        "ceiling: whole machine during the ceiling run.\n"
        "CPU bound: cores / (ceiling's CPU per record + the consumer's): the best any consumer using "
        "that much CPU could do on this machine.\n"
        "poll bound: the same with only kafka-python's poll() CPU per record (no decoding, no "
        "writing): the best any kafka-python consumer could do here."
    )
    return 0


def sink_env(sink: str, run: str, n: int) -> dict[str, str]:
    """Where the consumer of one round writes: its own index prefix or HDFS root."""
    if sink == "opensearch":
        return {"CONSUMER_OPENSEARCH_INDEX_PREFIX": f"bench-{run}-"}
    if sink == "hdfs":
        # Files of n/5 records, so the 10%..90% window spans several flushes.
        return {
            "CONSUMER_HDFS_ROOT": f"/bench/{run}/topics",
            "CONSUMER_BATCH_MAX_RECORDS": str(max(1000, n // 5)),
        }
    return {}


def compare_clients(servers: str, topic: str, n: int, records: list[Record]) -> Measured:
    """Kafka's own consumer, kafka-python and confluent-kafka alone, and decoding; returns kafka-python's."""
    print(f"{CORES} cores; CPU per record = busy CPU time of the whole machine / records")
    print(f"Kafka ConsumerPerformance (Java):  {kafka_perf_tool(servers, topic, n):>10,.0f} records/s")
    poll = kafka_python_poll(servers, topic, n)
    print(
        f"kafka-python poll() only:          {poll.per_s:>10,.0f} records/s "
        f"({poll.client_us:.0f} µs CPU/record in the client)"
    )
    rd = librdkafka_poll(servers, topic, n)
    print(
        f"confluent-kafka consume() only:    {rd.per_s:>10,.0f} records/s "
        f"({rd.client_us:.0f} µs CPU/record in the client; for comparison, not used by the consumers)"
    )
    print(f"decode_item() only (one core):     {decode_only(records):>10,.0f} records/s")
    return poll


def cleanup(key_prefix: str, index_prefix: str, hdfs_dir: str) -> None:
    clear_products(key_prefix)
    url = OpenSearchSettings().url
    for kind in ("products", "readings"):
        requests.delete(f"{url}/{index_prefix}{kind}", timeout=60)
        requests.delete(f"{url}/_index_template/{index_prefix}{kind}", timeout=60)
    hdfs = HdfsSettings()
    WebHdfs(hdfs.webhdfs_url, hdfs.user).delete(hdfs_dir, recursive=True)


if __name__ == "__main__":
    sys.exit(main())

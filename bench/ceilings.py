"""The raw ceiling of each store on the benchmark's data, and how rates and CPU are measured.

bench/consumers_bench.py runs each consumer next to these: PostgreSQL COPY, OpenSearch _bulk
from a plain client, one large WebHDFS write of the same records.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
from opensearchpy import OpenSearch

from consumers.batching import Decoded
from consumers.opensearch import INDEX_SETTINGS, mapping_for
from consumers.postgres import copy_text
from consumers.postgres_schema import TableSpec
from consumers.webhdfs import WebHdfs
from crawlstore.items import item_type
from crawlstore.settings import HdfsSettings, OpenSearchSettings, PostgresSettings

ProductItem = item_type("product")
PRODUCTS = TableSpec.for_kind(ProductItem.spec)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (every core, every process)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class Measured:
    """A sustained rate, and the CPU it cost per record: the whole machine's and the client's own."""

    per_s: float
    machine_us: float
    client_us: float | None = None


def timed(n: int, fn: Callable[[], None]) -> Measured:
    """The rate of `fn` writing n records, and the machine's CPU per record meanwhile."""
    start, cpu = time.monotonic(), busy_cpu_s()
    fn()
    return Measured(n / (time.monotonic() - start), (busy_cpu_s() - cpu) / n * 1e6)


def pg_copy(decoded: list[Decoded], key_prefix: str) -> Measured:
    """COPY of the same rows (typed columns, raw JSON, lineage) into `products` itself.

    The consumer then lands them into the same table, so both meet the same indexes and the same
    existing rows; the copied rows are deleted (and vacuumed) before the consumer runs.
    """
    data = copy_text(PRODUCTS, decoded)  # the sink's own encoding, built before the clock starts
    settings = PostgresSettings()
    conn = psycopg2.connect(**settings.connect_kwargs())
    try:

        def copy() -> None:
            with conn.cursor() as cur:
                cur.copy_expert(
                    f"COPY {PRODUCTS.table} ({', '.join(PRODUCTS.all_columns)}) FROM STDIN", io.StringIO(data)
                )
            conn.commit()

        return timed(len(decoded), copy)
    finally:
        conn.close()
        clear_products(key_prefix)


def clear_products(key_prefix: str) -> None:
    """Delete the benchmark's rows and its offsets, and vacuum, so the next run meets the table as before."""
    conn = psycopg2.connect(**PostgresSettings().connect_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM products WHERE product_id LIKE %s", (key_prefix + "%",))
            cur.execute("DELETE FROM kafka_offsets WHERE consumer_group LIKE 'bench-%%'")
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM products")
    finally:
        conn.close()


def os_bulk(decoded: list[Decoded], settings: OpenSearchSettings, batch: int = 2000) -> Measured:
    """_bulk from a plain client: the same documents, same mapping, same batch size, no versioning."""
    client = OpenSearch(hosts=[settings.url], timeout=120)
    index = f"bench-raw-{uuid.uuid4().hex[:8]}"
    client.indices.create(
        index=index, body={"settings": INDEX_SETTINGS, "mappings": mapping_for(ProductItem.spec)}
    )
    bodies = []
    for start in range(0, len(decoded), batch):
        lines = []
        for d in decoded[start : start + batch]:
            lines.append(json.dumps({"index": {"_index": index, "_id": d.item.key}}).encode())
            lines.append(d.document())
        bodies.append(b"\n".join(lines) + b"\n")
    try:
        return timed(
            len(decoded), lambda: [client.bulk(body=b, params={"filter_path": "errors"}) for b in bodies]
        )
    finally:
        client.indices.delete(index=index)
        client.close()


def hdfs_write(decoded: list[Decoded], settings: HdfsSettings) -> Measured:
    """One large WebHDFS write of the same JSON lines."""
    fs = WebHdfs(settings.webhdfs_url, settings.user)
    data = b"".join(d.document() + b"\n" for d in decoded)
    path = f"/bench/raw-{uuid.uuid4().hex[:8]}.jsonl"
    try:
        return timed(len(decoded), lambda: fs.create(path, data))
    finally:
        fs.delete(path)


CEILINGS = {"postgres": "PostgreSQL COPY", "opensearch": "OpenSearch _bulk", "hdfs": "one WebHDFS write"}


def ceiling_of(sink: str, decoded: list[Decoded], key_prefix: str) -> Measured:
    if sink == "postgres":
        return pg_copy(decoded, key_prefix)
    if sink == "opensearch":
        return os_bulk(decoded, OpenSearchSettings())
    return hdfs_write(decoded, HdfsSettings())

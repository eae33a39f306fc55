"""HDFS layouts and formats from the configuration's `topics/` families, against real Kafka and HDFS:
Parquet files typed from the kind, a family's own directories, and a new topic under a declared
prefix followed without a restart. (Parquet after kill -9: test_consumers_crash.)"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from consumers.hdfs_files import parse_file_name
from crawlstore.config.loader import DEFAULT_DIR

pytestmark = pytest.mark.integration


def test_a_parquet_topic_lands_files_pyarrow_reads_back_with_the_declared_types(
    kit: Any, make_topic: Any, producer: Any, run_consumer: Any, webhdfs: Any, tmp_path: Path, read_topic: Any
) -> None:
    topic = make_topic()
    config = kit.parquet_config(tmp_path / "config", topic)
    root = f"/test/{uuid.uuid4().hex[:12]}/topics"
    readings = [
        kit.reading(f"dev-1:{i:05d}", i, motor1=10.0, sensor3=95.0 if i % 10 == 1 else 1.0)
        for i in range(300)
    ]
    sent = producer(topic, readings)
    consumer = run_consumer("hdfs", topics=topic, config_dir=config, hdfs_root=root)
    try:
        consumer.wait_healthy()
        kit.eventually(
            "300 rows in Parquet files", lambda: len(kit.parquet_rows(webhdfs.files(root, topic))) >= 300
        )
        files = webhdfs.files(root, topic)
        assert files and all(parse_file_name(p.rsplit("/", 1)[1]) for p in files)
        assert all(p.endswith(".parquet") and "/dt=" in p for p in files)
        schema = pq.read_schema(io.BytesIO(next(iter(files.values()))))
        declared = {
            "reading_id": pa.string(),
            "device_id": pa.string(),
            "sensor1": pa.float64(),
            "is_fail": pa.bool_(),
            "measured_at": pa.timestamp("us", tz="UTC"),
            "status": pa.string(),
            "source": pa.string(),
            "crawled_at": pa.timestamp("us", tz="UTC"),
        }
        assert {name: schema.field(name).type for name in declared} == declared
        assert schema.field("kafka").type.field("offset").type == pa.int64()
        assert schema.metadata[b"crawlstore.kind"] == b"crawlstore.reading.v1"

        rows = kit.parquet_rows(files)
        positions = [(r["kafka"]["partition"], r["kafka"]["offset"]) for r in rows]
        assert len(positions) == len(set(positions)) == 300
        assert set(positions) == {(s.partition, s.offset) for s in sent}
        by_id = {r["reading_id"]: r for r in rows}
        for s in sent:
            row, item = by_id[s.item.reading_id], s.item
            assert (row["measured_at"], row["is_fail"], row["sensor1"]) == (
                item.measured_at,
                item.is_fail,
                item.sensor1,
            )
            assert row["status"] == item.status  # the derived field, as the consumer derived it
        assert {r["status"] for r in rows} == {"OK", "CRITICAL"}
        assert read_topic(f"{topic}-dlq") == []
    finally:
        webhdfs.delete(root.rsplit("/", 1)[0])
    assert consumer.stop() == 0


def test_a_family_lays_out_its_topics_and_the_consumer_follows_a_new_topic_under_its_prefix(
    kit: Any,
    make_topic: Any,
    producer: Any,
    run_consumer: Any,
    webhdfs: Any,
    tmp_path: Path,
    read_topic: Any,
    kafka_servers: str,
) -> None:
    run = uuid.uuid4().hex[:10]
    prefix, base = f"test.f{run}.", f"/test/f{run}"
    config = tmp_path / "config"
    shutil.copytree(DEFAULT_DIR / "kinds", config / "kinds")
    (config / "sources").mkdir()
    (config / "topics").mkdir()
    source = json.loads(json.dumps({"source": "alpha", "kind": "product", "topic": f"{prefix}alpha"}))
    source |= {"spider": "catalogue", "start_url": "http://127.0.0.1:9/", "schedule": "@daily"}
    source |= {"extract": {"item_links": "a::attr(href)", "product_id": "td::text"}}
    (config / "sources" / "alpha.yaml").write_text(json.dumps(source), encoding="utf-8")
    family = {"family": "raw", "topics": f"{prefix}*", "hdfs": {"path": f"{base}/raw/{{name}}/{{date}}"}}
    (config / "topics" / "raw.yaml").write_text(json.dumps(family), encoding="utf-8")

    alpha = make_topic(f"{prefix}alpha", partitions=1)
    sent_alpha = producer(alpha, [kit.product(f"A{run}-{i}", i) for i in range(20)])
    consumer = run_consumer("hdfs", config_dir=config)  # no CONSUMER_TOPICS: what the configuration says
    try:
        consumer.wait_healthy()
        assert f"/^({prefix.replace('.', chr(92) + '.')}" in consumer.log_text()
        # Created after the consumer started, and without its -dlq twins: nobody declared it.
        beta = make_topic(f"{prefix}beta", partitions=1, with_dlq=False)
        sent_beta = producer(beta, [kit.product(f"B{run}-{i}", i) for i in range(30)])
        [bad] = producer(beta, [kit.Sent(b"bad", b"{not json", [], None)])

        def landed(name: str) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for day in webhdfs.list(f"{base}/raw/{name}"):
                folder = f"{base}/raw/{name}/{day['pathSuffix']}"
                out += kit.jsonl_lines(
                    {
                        f: webhdfs.read(f"{folder}/{f}")
                        for f in (e["pathSuffix"] for e in webhdfs.list(folder))
                    }
                )
            return out

        kit.eventually(
            "both topics in their family's directories",
            lambda: len(landed("alpha")) == 20 and len(landed("beta")) == 30,
            90,
        )
        days = {d["pathSuffix"] for d in webhdfs.list(f"{base}/raw/beta")}
        assert days == {sent_beta[0].item.crawled_at.date().isoformat()}
        assert {r["product_id"] for r in landed("alpha")} == {s.item.product_id for s in sent_alpha}
        assert {(r["kafka"]["topic"], r["kafka"]["offset"]) for r in landed("beta")} == {
            (beta, s.offset) for s in sent_beta
        }
        # The consumer made the twins, and the bad record is dead-lettered there, not stuck.
        kit.eventually(
            "the bad record in the created -dlq twin", lambda: len(read_topic(f"{beta}-dlq")) == 1, 60
        )
        assert kit.dlq_sources(read_topic(f"{beta}-dlq")) == {(bad.partition, bad.offset)}
        assert f"{beta} joined by pattern had no dead-letter twins: created {beta}-dlq" in consumer.log_text()
    finally:
        webhdfs.delete(base)
        admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
        with contextlib.suppress(KafkaError):
            admin.delete_topics([f"{prefix}beta-dlq", f"{prefix}beta-dlq-parking"])
        admin.close()
    assert consumer.stop() == 0

"""The HDFS consumer against real Kafka and HDFS (WebHDFS): files, names, days, recovery from names."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from consumers.hdfs_files import parse_file_name

pytestmark = pytest.mark.integration


@pytest.fixture
def hdfs_root(webhdfs: Any) -> Iterator[str]:
    base = f"/test/{uuid.uuid4().hex[:12]}"
    yield f"{base}/topics"
    webhdfs.delete(base)


def file_ranges(files: dict[str, bytes]) -> dict[int, list[tuple[int, int]]]:
    """Per partition, the sorted (first, last) offsets the committed file names account for."""
    out: dict[int, list[tuple[int, int]]] = {}
    for path in files:
        parsed = parse_file_name(path.rsplit("/", 1)[1])
        assert parsed is not None, path
        out.setdefault(parsed.partition, []).append((parsed.first, parsed.last))
    return {p: sorted(r) for p, r in out.items()}


def test_lands_one_line_per_record_in_offset_named_files_and_a_redelivery_changes_nothing(
    kit: Any, topic: str, producer: Any, run_consumer: Any, webhdfs: Any, hdfs_root: str
) -> None:
    items = [kit.product(f"p{i}", i) for i in range(300)] + [kit.reading(f"r{i}", i) for i in range(100)]
    sent = producer(topic, items)
    consumer = run_consumer("hdfs", topics=topic, hdfs_root=hdfs_root, batch_max_records=150)
    kit.eventually("400 lines in HDFS", lambda: len(kit.jsonl_lines(webhdfs.files(hdfs_root, topic))) == 400)
    files = webhdfs.files(hdfs_root, topic)
    lines = kit.jsonl_lines(files)
    by_offset = {(s.partition, s.offset): s for s in sent}
    for line in lines:
        s = by_offset[(line["kafka"]["partition"], line["kafka"]["offset"])]
        kafka = line.pop("kafka")
        assert kafka == {
            "topic": topic,
            "partition": s.partition,
            "offset": s.offset,
            "timestamp": s.timestamp_ms,
        }
        assert line == json.loads(s.value)
    # Names: contiguous ranges per partition starting at 0, ending at the last offset; dated dirs.
    ends = {p: max(o for q, o in by_offset if q == p) for p in {q for q, _ in by_offset}}
    for partition, ranges in file_ranges(files).items():
        assert ranges[0][0] == 0 and ranges[-1][1] == ends[partition]
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    day = sent[0].item.crawled_at.date().isoformat()
    assert all(f"/{topic}/dt={day}/" in path for path in files)
    # No temp file left behind: partition 0's staging area holds its claim and an empty folder.
    staging = {e["pathSuffix"]: e["type"] for e in webhdfs.list(f"{hdfs_root}/+tmp/{topic}/0")}
    (claim,) = [name for name, kind in staging.items() if kind == "FILE"]
    assert claim.endswith(".claim") and staging == {claim: "FILE", claim.removesuffix(".claim"): "DIRECTORY"}
    assert webhdfs.list(f"{hdfs_root}/+tmp/{topic}/0/{claim.removesuffix('.claim')}") == []
    assert consumer.stop() == 0

    # A new group (nothing committed in Kafka) resumes from the file names: nothing is rewritten.
    again = run_consumer("hdfs", topics=topic, hdfs_root=hdfs_root)
    again.wait_healthy()
    producer(topic, [kit.product("one-more", 1000)])
    kit.eventually(
        "only the new record was written",
        lambda: len(kit.jsonl_lines(webhdfs.files(hdfs_root, topic))) == 401,
    )
    assert again.metric("crawlstore_consumer_records_consumed_total") == 1
    after = webhdfs.files(hdfs_root, topic)
    assert {p: c for p, c in after.items() if p in files} == files
    assert again.stop() == 0


def test_records_of_different_days_go_to_their_day_directories(
    kit: Any, topic: str, producer: Any, run_consumer: Any, webhdfs: Any, hdfs_root: str
) -> None:
    today = [kit.product(f"t{i}", i) for i in range(20)]
    yesterday = [
        kit.product(f"y{i}", i, crawled_at=today[0].crawled_at - timedelta(days=1)) for i in range(20)
    ]
    sent = producer(topic, today + yesterday)
    consumer = run_consumer("hdfs", topics=topic, hdfs_root=hdfs_root)
    kit.eventually("40 lines", lambda: len(kit.jsonl_lines(webhdfs.files(hdfs_root, topic))) == 40)
    files = webhdfs.files(hdfs_root, topic)
    for path, content in files.items():
        day = path.split("/dt=")[1].split("/")[0]
        for line in content.splitlines():
            assert json.loads(line)["crawled_at"][:10] == day
    days = {path.split("/dt=")[1].split("/")[0] for path in files}
    assert days == {s.item.crawled_at.date().isoformat() for s in sent}
    for partition, ranges in file_ranges(files).items():
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)), partition
    assert consumer.stop() == 0


def test_a_quiet_topic_gets_its_file_without_waiting_for_size_or_age(
    kit: Any, topic: str, producer: Any, run_consumer: Any, webhdfs: Any, hdfs_root: str
) -> None:
    # Files would wait for 1M records or 10 minutes; the idle flush writes them once input stops.
    consumer = run_consumer(
        "hdfs",
        topics=topic,
        hdfs_root=hdfs_root,
        batch_max_records=1_000_000,
        batch_max_wait_ms=600_000,
        batch_idle_ms=2000,
    )
    consumer.wait_healthy()
    producer(topic, [kit.product(f"q{i}", i) for i in range(30)])
    kit.eventually(
        "the idle flush wrote the records",
        lambda: len(kit.jsonl_lines(webhdfs.files(hdfs_root, topic))) == 30,
        timeout_s=60,
    )
    assert consumer.stop() == 0


def test_a_batch_of_dead_letters_only_is_not_dead_lettered_again_after_a_restart(
    kit: Any, topic: str, producer: Any, run_consumer: Any, webhdfs: Any, hdfs_root: str, read_topic: Any
) -> None:
    consumer = run_consumer("hdfs", topics=topic, hdfs_root=hdfs_root)
    group = consumer.env["CONSUMER_GROUP"]
    consumer.wait_healthy()
    producer(topic, [kit.product(f"g{i}", i) for i in range(10)])
    kit.eventually("10 lines", lambda: len(kit.jsonl_lines(webhdfs.files(hdfs_root, topic))) == 10)
    headers = [("crawlstore.schema", b"crawlstore.product.v1")]
    producer(topic, [kit.Sent(f"bad{i}".encode(), b"{not json", headers, None) for i in range(5)])
    kit.eventually("5 dead letters", lambda: len(read_topic(f"{topic}-dlq")) == 5)
    assert consumer.stop() == 0
    # No file accounts for the dead-lettered tail; Kafka's commit does, so they are not read again.
    again = run_consumer("hdfs", topics=topic, hdfs_root=hdfs_root, group=group)
    again.wait_healthy()
    producer(topic, [kit.product("after", 99)])
    kit.eventually("11 lines", lambda: len(kit.jsonl_lines(webhdfs.files(hdfs_root, topic))) == 11)
    assert again.metric("crawlstore_consumer_records_consumed_total") == 1
    assert len(read_topic(f"{topic}-dlq")) == 5
    assert again.stop() == 0

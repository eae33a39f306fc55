"""Fencing of the HDFS sink: a consumer that lost a partition commits nothing more for it, and
overlapping committed files are resolved when a partition is opened (real HDFS, real Kafka).

The two-consumer test freezes one consumer with SIGSTOP at the moment it sends a WebHDFS request
of a flush (its WebHDFS traffic goes through a small forwarding proxy that holds that request),
keeps it frozen past its session timeout until the other member has claimed its partition and
written, then lets the held request through and the consumer run on: the situation of a flush
that outlived its session, with the request reaching the NameNode after the takeover.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import signal
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kafka.structs import TopicPartition

from consumers.errors import Fenced
from consumers.hdfs import HdfsSink
from consumers.hdfs_files import CommittedFile
from crawlstore.settings import HdfsSettings

pytestmark = pytest.mark.integration

TOPIC = "fence.products"  # the sink-level tests need no Kafka topic, only its name


@pytest.fixture
def hdfs_root(webhdfs: Any) -> Iterator[str]:
    base = f"/test/{uuid.uuid4().hex[:12]}"
    yield f"{base}/topics"
    webhdfs.delete(base)


def decoded(kit: Any, partition: int, offsets: range) -> list[Any]:
    items = [kit.product(f"fence-{partition}-{o}", o) for o in offsets]
    return list(kit.decoded(items, TOPIC, partition, offsets.start))


def batch(kit: Any, partition: int, offsets: range) -> Any:
    return kit.batch_of(decoded(kit, partition, offsets))


def jsonl(d: list[Any]) -> bytes:
    return b"".join(x.document() + b"\n" for x in d)


def offsets_in(webhdfs: Any, root: str, partition: int = 0) -> list[int]:
    lines = [
        json.loads(line)["kafka"]
        for content in webhdfs.files(root, TOPIC).values()
        for line in content.splitlines()
    ]
    return sorted(k["offset"] for k in lines if k["partition"] == partition)


def file_ranges(webhdfs: Any, root: str) -> list[tuple[int, int]]:
    names = [path.rsplit("/", 1)[1] for path in webhdfs.files(root, TOPIC)]
    return sorted((int(n.split("+")[2]), int(n.split("+")[3].split(".")[0])) for n in names)


def test_a_consumer_whose_partition_was_claimed_can_neither_upload_nor_rename(
    webhdfs: Any, kit: Any, hdfs_root: str
) -> None:
    tp = TopicPartition(TOPIC, 0)
    old, new = HdfsSink(HdfsSettings(), hdfs_root), HdfsSink(HdfsSettings(), hdfs_root)
    try:
        old.start()
        assert old.open([tp], {}) == {}
        first = batch(kit, 0, range(0, 100))
        old.put(first)
        old.flush(first)
        second = batch(kit, 0, range(100, 200))
        old.put(second)  # staged; now it stalls past its session and the partition moves on

        assert new.open([tp], {}) == {tp: 100}  # resumes after the old owner's last rename

        with pytest.raises(Fenced) as renaming:
            old.flush(second)
        assert renaming.value.partitions == {tp}
        old.abort()
        with pytest.raises(Fenced):
            old.put(second)  # nor can it upload again: its staging folder is gone for good

        theirs = batch(kit, 0, range(100, 250))
        new.put(theirs)
        new.flush(theirs)
        assert offsets_in(webhdfs, hdfs_root) == list(range(250))
        assert file_ranges(webhdfs, hdfs_root) == [(0, 99), (100, 249)]
        # Only the newest claim and its (empty) staging folder are left.
        staging = webhdfs.list(f"{hdfs_root}/+tmp/{TOPIC}/0")
        assert sorted((e["pathSuffix"], e["type"]) for e in staging) == [
            ("2", "DIRECTORY"),
            ("2.claim", "FILE"),
        ]
        assert webhdfs.list(f"{hdfs_root}/+tmp/{TOPIC}/0/2") == []
    finally:
        old.stop()
        new.stop()


def test_overlapping_files_are_resolved_when_the_partition_is_opened(
    webhdfs: Any, kit: Any, hdfs_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Files left by two writers of one partition (a version without claims, a copy by hand):
    after open each offset is in one file, and the partition resumes after the last."""
    tp = TopicPartition(TOPIC, 0)
    records = decoded(kit, 0, range(0, 150))
    day = f"{hdfs_root}/{TOPIC}/dt={records[0].item.crawled_at.date().isoformat()}"
    sink = HdfsSink(HdfsSettings(), hdfs_root)
    try:
        sink.start()
        for first, last in [(0, 99), (50, 149), (60, 70)]:
            name = CommittedFile(TOPIC, 0, first, last).name
            sink.fs.create(f"{day}/{name}", jsonl(records[first : last + 1]))
        with caplog.at_level("WARNING", logger="consumers.hdfs"):
            assert sink.open([tp], {}) == {tp: 150}
        assert file_ranges(webhdfs, hdfs_root) == [(0, 99), (100, 149)]
        assert offsets_in(webhdfs, hdfs_root) == list(range(150))
        overlaps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("OVERLAP")]
        assert len(overlaps) == 2, overlaps  # one file deleted, one cut
        # The cut file holds its records as they were.
        cut = webhdfs.read(f"{day}/{CommittedFile(TOPIC, 0, 100, 149).name}")
        assert cut == jsonl(records[100:150])
    finally:
        sink.stop()


# ---------------------------------------------------------------------------- two consumers


class HoldingProxy(http.server.ThreadingHTTPServer):
    """Forwards WebHDFS requests to the NameNode. The first `op` request after `after` renames is
    held: the frozen consumer is stopped (SIGSTOP) and the request waits until `release` is set;
    then it is forwarded and the consumer continued (SIGCONT)."""

    daemon_threads = True

    def __init__(self, target: str, op: str, after: int) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.target, self.op, self.after = target.rstrip("/"), op, after
        self.pid: int | None = None
        self.renames = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self.continued = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def should_hold(self, op: str, path: str) -> bool:
        with self.lock:
            if op == "RENAME" and "/+tmp/" in path:
                self.renames += 1
            hold = op == self.op and "/+tmp/" in path and self.renames > self.after and not self.held.is_set()
            if hold:
                self.held.set()
            return hold


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: HoldingProxy

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _forward(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        op = dict(urllib.parse.parse_qsl(parts.query)).get("op", "")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.should_hold(op, urllib.parse.unquote(parts.path)):
            assert self.server.pid is not None
            os.kill(self.server.pid, signal.SIGSTOP)
            self.server.release.wait(120)
        response = requests.request(
            self.command,
            self.server.target + self.path,
            data=body,
            headers={k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}},
            allow_redirects=False,
            timeout=60,
        )
        if self.server.release.is_set() and not self.server.continued.is_set():
            self.server.continued.set()
            assert self.server.pid is not None
            os.kill(self.server.pid, signal.SIGCONT)
        self.send_response(response.status_code)
        for k, v in response.headers.items():
            if k.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    do_GET = do_PUT = do_POST = do_DELETE = _forward


@pytest.mark.parametrize("held", ["CREATE", "RENAME"])
def test_two_consumers_one_frozen_mid_flush_past_its_session_every_record_once(
    held: str,
    kit: Any,
    make_topic: Any,
    producer: Any,
    run_consumer: Any,
    webhdfs: Any,
    hdfs_root: str,
    stack_env: dict[str, str],
) -> None:
    """Held CREATE: the upload reaches the NameNode after the takeover. Held RENAME: the rename
    does. Without fencing either one commits a file the new owner has written too."""
    topic = make_topic(partitions=2)
    proxy = HoldingProxy(stack_env["WEBHDFS_URL"], held, after=4)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    group = f"test-fence-{uuid.uuid4().hex[:8]}"
    common = {
        "topics": topic,
        "group": group,
        "hdfs_root": hdfs_root,
        "batch_max_wait_ms": 200,
        "session_timeout_ms": 6000,
    }
    # Batches of different sizes: the two never name a file alike by chance.
    frozen = run_consumer("hdfs", **common, batch_max_records=40, start=False)
    frozen.env["WEBHDFS_URL"] = proxy.url
    frozen.start().wait_healthy()
    other = run_consumer("hdfs", **common, batch_max_records=70)
    other.wait_healthy()
    kit.eventually(
        "both consumers hold a partition",
        lambda: frozen.metric("crawlstore_consumer_assigned_partitions") == 1,
    )
    assert frozen.proc is not None
    proxy.pid = frozen.proc.pid

    sent: list[Any] = []
    done = threading.Event()

    def produce() -> None:
        try:
            for start in range(0, 3000, 100):
                sent.extend(producer(topic, [kit.product(f"f{i}", i) for i in range(start, start + 100)]))
                time.sleep(0.7)
        finally:
            done.set()

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    try:
        kit.eventually(f"a {held} of the frozen consumer held", proxy.held.is_set, 60)
        kit.eventually(
            "the other consumer took both partitions over",
            lambda: other.metric("crawlstore_consumer_assigned_partitions") == 2,
            60,
        )
        written = other.metric("crawlstore_consumer_records_written_total")
        kit.eventually(
            "the other consumer wrote on",
            lambda: other.metric("crawlstore_consumer_records_written_total") >= written + 200,
            60,
        )
    finally:
        proxy.release.set()
        if proxy.held.is_set():
            kit.eventually("the frozen consumer continued", proxy.continued.is_set, 60)
    writer.join(timeout=120)
    assert done.is_set() and len(sent) == 3000
    expected = {(s.partition, s.offset) for s in sent}

    def positions() -> list[tuple[int, int]]:
        lines = [
            json.loads(line)["kafka"]
            for c in webhdfs.files(hdfs_root, topic).values()
            for line in c.splitlines()
        ]
        return [(k["partition"], k["offset"]) for k in lines]

    kit.eventually("every record in HDFS", lambda: set(positions()) >= expected, 180)
    found = positions()
    assert len(found) == len(set(found)), "a record is in two files"
    assert set(found) == expected
    # Files of each partition: contiguous, none overlapping.
    ranges: dict[int, list[tuple[int, int]]] = {}
    for path in webhdfs.files(hdfs_root, topic):
        _, p, first, last = path.rsplit("/", 1)[1].split(".jsonl")[0].rsplit("+", 3)
        ranges.setdefault(int(p), []).append((int(first), int(last)))
    for spans in ranges.values():
        spans.sort()
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans)), spans
    assert frozen.alive() and other.alive()
    assert "FENCED" in frozen.log_text(), frozen.log_tail()
    # Fenced, nobody committed a file another had written: no overlap ever needed resolving.
    assert "OVERLAP" not in frozen.log_text() + other.log_text()
    assert frozen.stop() == 0 and other.stop() == 0
    proxy.shutdown()

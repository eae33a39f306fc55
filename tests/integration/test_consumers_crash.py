"""kill -9 each consumer mid-stream, several times, restart it: every record lands exactly once.

Each key is produced twice (an older and a newer crawl), so the PostgreSQL and OpenSearch checks
also cover the stale-write guard under replays: after all the crashes every row/document is the
newer version, once. HDFS keeps every record: each (partition, offset) in exactly one line (of a
JSON Lines file) or row (of a Parquet file).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

KEYS = 5000
KILLS = 4
# Every crawl time on one UTC day (yesterday, 01:00 to 03:23). Times around "now" cross midnight
# when the test runs near it: a partition's records then alternate between two days, each batch
# becomes dozens of one-day HDFS files, and the HDFS cases ran out of time (seen at 23:17 UTC).
DAY_START = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), day_time(1), tzinfo=UTC)


@pytest.mark.parametrize("sink", ["postgres", "opensearch", "hdfs", "hdfs_parquet"])
def test_kill_9_mid_stream_then_restart_lands_everything_exactly_once(
    sink: str,
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    make_store: Any,
    key_prefix: str,
    read_topic: Any,
) -> None:
    store = make_store(sink, topic, key_prefix)
    older = [
        kit.product(f"{key_prefix}{i}", i, crawled_at=DAY_START + timedelta(seconds=i), name=f"older {i}")
        for i in range(KEYS)
    ]
    newer = [
        kit.product(f"{key_prefix}{i}", i, name=f"newer {i}", crawled_at=o.crawled_at + timedelta(hours=1))
        for i, o in enumerate(older)
    ]
    # Keys in random order, each twice: its older crawl first, its newer crawl later (same
    # partition, so a higher offset).
    order = list(range(KEYS)) * 2
    random.Random(7).shuffle(order)
    seen: set[int] = set()
    ordered = []
    for k in order:
        ordered.append(newer[k] if k in seen else older[k])
        seen.add(k)

    sent: list[Any] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def produce() -> None:
        # ~250 records/s for ~40 s: the kills below all happen while records keep coming, and
        # every restart faces a backlog, so kills land in the middle of flushes.
        try:
            for start in range(0, len(ordered), 250):
                sent.extend(producer(topic, ordered[start : start + 250]))
                time.sleep(1.0)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    consumer = run_consumer(
        store.sink,
        topics=topic,
        batch_max_records=100,
        batch_max_wait_ms=200,
        session_timeout_ms=6000,
        config_dir=store.config_dir,
        **store.env,
    )
    consumer.wait_healthy()
    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    rng = random.Random(11)
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.1, 1.5))  # healthy and working through its backlog
        assert not failure, failure
        assert not done.is_set(), "production ended before the last kill: slow it down"
        consumer.kill()
        consumer.start()
        consumer.wait_healthy(120)
    writer.join(timeout=300)
    assert done.is_set() and len(sent) == 2 * KEYS
    assert consumer.history == [-9] * KILLS

    if store.sink == "hdfs":
        expected = {(s.partition, s.offset) for s in sent}
        kit.eventually("every record in HDFS", lambda: len(store.records()) >= len(expected), 180)
        records = store.records()
        positions = [(r["partition"], r["offset"]) for r in records]
        assert len(positions) == len(set(positions)), "duplicate lines"
        assert set(positions) == expected
    else:
        newest = {s.item.key: s for s in sent if s.item.name.startswith("newer")}
        kit.eventually(
            "every key stored in its newer version",
            lambda: sum(r["name"].startswith("newer") for r in store.records()) == KEYS,
            180,
        )
        records = store.records()
        assert len(records) == KEYS
        for r in records:
            s = newest[r["key"]]
            assert (r["name"], r["partition"], r["offset"]) == (s.item.name, s.partition, s.offset)
    assert read_topic(f"{topic}-dlq") == []
    assert consumer.stop() == 0
    log = consumer.log_text()
    assert log.count("===== start #") == KILLS + 1

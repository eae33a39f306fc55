"""A polling source against the real demo site, Kafka and the stack's consumers: a minute of polls
every 10 s publishes every reading measured in that minute exactly once, each within its poll,
and every valid one lands in PostgreSQL. (Latency figures: bench/poll_latency.py.)"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka import KafkaConsumer, TopicPartition

from crawlstore import pipeline
from crawlstore.crawl.poll import PollState
from demo.site import readings

pytestmark = pytest.mark.integration
SOURCE = "demo_sensors_live"


def published_keys(consumer: KafkaConsumer, since: dict[TopicPartition, int], runs: set[str]) -> Counter[str]:
    """How often each key was published by these runs, in the topic since `since`."""
    partitions = list(since)
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, since[tp])
    end = consumer.end_offsets(partitions)
    keys: Counter[str] = Counter()
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        for batch in consumer.poll(timeout_ms=1000).values():
            for message in batch:
                if dict(message.headers).get("crawlstore.run_id", b"").decode() in runs:
                    keys[message.key.decode()] += 1
    consumer.close()
    return keys


def test_a_minute_of_polling_publishes_each_reading_once_and_every_valid_one_lands(
    stack_env: dict[str, str], pg_settings: Any, kit: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRAWLSTORE_DATA_DIR", str(tmp_path))
    source = pipeline.get_source(SOURCE)
    assert source.poll is not None and source.poll["every_s"] == 10
    consumer = KafkaConsumer(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"], enable_auto_commit=False)
    partitions = [TopicPartition(source.topic, p) for p in consumer.partitions_for_topic(source.topic) or ()]
    before = consumer.end_offsets(partitions)
    start = datetime.now(UTC).replace(microsecond=0)
    (tmp_path / SOURCE).mkdir()
    PollState(tmp_path / SOURCE / "poll_state.json").save(start)

    totals = pipeline.poll(SOURCE, "test_poll_minute", duration_s=65)

    until = datetime.fromisoformat(totals["until"])
    assert totals["polls"] >= 6 and until >= start + timedelta(seconds=55)
    expected = list(readings(start, until))
    valid = {r.label for r in expected if not r.invalid}
    assert expected and totals["items"] == len(expected) and totals["published"] == len(valid)

    # Kafka: each valid reading of the window exactly once, nothing else from this run.
    assert published_keys(consumer, before, {"test_poll_minute"}) == Counter(valid)

    def landed() -> dict[str, Any]:
        with psycopg2.connect(**pg_settings.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT reading_id, status FROM readings WHERE reading_id = ANY(%s)", (sorted(valid),)
            )
            rows = dict(cur.fetchall())
        conn.close()
        return rows

    kit.eventually("every polled reading in PostgreSQL", lambda: set(landed()) == valid, 60)
    assert set(landed().values()) <= {"OK", "CRITICAL"}


def test_a_poll_that_dies_after_publishing_a_window_does_not_publish_it_again(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRAWLSTORE_DATA_DIR", str(tmp_path))
    source = pipeline.get_source(SOURCE)
    consumer = KafkaConsumer(
        bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"],
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    partitions = [TopicPartition(source.topic, p) for p in consumer.partitions_for_topic(source.topic) or ()]
    before = consumer.end_offsets(partitions)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)  # 2+ readings each
    (tmp_path / SOURCE).mkdir()
    state = PollState(tmp_path / SOURCE / "poll_state.json")
    state.save(start)

    # The first run publishes its first window, then dies before it can note the window as done.
    real_save = PollState.save

    def die(self: PollState, until: datetime) -> None:
        raise RuntimeError("killed after publishing, before saving the window as done")

    monkeypatch.setattr(PollState, "save", die)
    with pytest.raises(RuntimeError, match="killed after publishing"):
        pipeline.poll(SOURCE, "test_poll_dies", duration_s=5)
    pending = state.pending()
    assert pending is not None and pending[0] == start

    # The next run asks for exactly that window again first; its publish finds it done.
    monkeypatch.setattr(PollState, "save", real_save)
    totals = pipeline.poll(SOURCE, "test_poll_after", duration_s=5)
    assert state.pending() is None
    until = datetime.fromisoformat(totals["until"])
    valid = {r.label for r in readings(start, until) if not r.invalid}
    first_window = {r.label for r in readings(*pending) if not r.invalid}
    assert first_window and totals["published"] == len(valid - first_window)

    # The first window's readings once, not twice.
    assert published_keys(consumer, before, {"test_poll_dies", "test_poll_after"}) == Counter(valid)

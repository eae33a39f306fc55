"""The Pipeline page's pure parts: its settings, the consumers' metrics it reads, the DLQ counts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from consumers.metrics import ConsumerMetrics
from crawlstore.dlq import H_CONNECTOR, H_ERROR_KIND, H_EXC_MESSAGE, H_FAILED_AT
from crawlstore.settings import PageSettings
from crawlstore.ui.letters import TEXT_MAX, UNKNOWN, UNREADABLE, LetterReader, TopicLetters
from crawlstore.ui.state import merge_ledger, parse_metrics, rate, topic_lag

pytestmark = pytest.mark.unit


def test_consumer_endpoints_and_the_kafka_ui_topic_url_are_checked_with_the_variable_named() -> None:
    page = PageSettings(consumers="postgres=http://a:1/, hdfs=http://b:2")
    assert page.consumer_urls() == {"postgres": "http://a:1", "hdfs": "http://b:2"}
    with pytest.raises(ValidationError, match="PIPELINE_PAGE_CONSUMERS"):
        PageSettings(consumers="postgres:9101")
    with pytest.raises(ValidationError, match="PIPELINE_PAGE_KAFKA_UI_TOPIC_URL"):
        PageSettings(kafka_ui_topic_url="http://ui/topics")
    assert (
        PageSettings(kafka_ui_topic_url="http://ui/t/{topic}").topic_url("a b/c") == "http://ui/t/a%20b%2Fc"
    )


def test_the_page_reads_a_consumers_rate_and_counters_from_its_metrics_text() -> None:
    metrics = ConsumerMetrics("postgres", "crawlstore-postgres")
    metrics.written, metrics.dead_lettered, metrics.retries = 120, 3, 2
    metrics.lag = {("t", 0): 5, ("t", 1): 7}
    numbers = parse_metrics(metrics.render())
    assert numbers["written"] == 120 and numbers["dead_lettered"] == 3 and numbers["retries"] == 2
    assert "rate" in numbers and "lag" not in numbers


@dataclass
class Message:
    partition: int
    offset: int
    key: bytes | None
    headers: list[tuple[str, bytes]]


def letter(offset: int, sink: str, kind: str, reason: str) -> Message:
    headers = [
        (H_CONNECTOR, sink.encode()),
        (H_ERROR_KIND, kind.encode()),
        (H_EXC_MESSAGE, reason.encode()),
        (H_FAILED_AT, b"2026-12-01T10:00:00+00:00"),
    ]
    return Message(0, offset, b"k\xff" + str(offset).encode(), headers)


def test_dead_letters_are_counted_by_sink_and_kind_with_the_newest_first_and_long_text_cut() -> None:
    topic = TopicLetters("t-dlq")
    for i in range(14):
        topic.add(letter(i, "postgres" if i % 2 else "hdfs", "k1" if i < 10 else "k2", f"r{i}"))
    topic.add(letter(14, "opensearch", "huge", "x" * 5000))
    topic.records = 15
    shown = topic.as_dict()
    assert [(g["sink"], g["error_kind"], g["count"]) for g in shown["groups"]] == [
        ("hdfs", "k1", 5),
        ("postgres", "k1", 5),
        ("hdfs", "k2", 2),
        ("postgres", "k2", 2),
        ("opensearch", "huge", 1),
    ]
    assert shown["groups"][0]["reason"] == "r8"  # the newest reason of the group
    assert [x["offset"] for x in shown["newest"]] == list(range(14, 4, -1))
    assert len(shown["newest"][0]["reason"]) == TEXT_MAX + 1 and shown["newest"][1]["key"] == "k\ufffd13"
    assert topic.position == {0: 15} and shown["complete"] is False  # `read` is set by the reader


def test_a_dead_letter_with_unreadable_headers_is_listed_not_fatal_and_not_replayable() -> None:
    topic = TopicLetters("t-dlq")
    bad = Message(0, 0, b"k", [(H_FAILED_AT, b"yesterday"), (H_CONNECTOR, b"postgres")])
    topic.add(bad)
    topic.add(Message(0, 1, b"k", [(H_FAILED_AT, b"2026-12-01T10:00:00+00:00")]))  # no sink, no kind
    topic.add(letter(2, "postgres", "postgres_23514", "r"))
    groups = {(g["sink"], g["error_kind"]): g["replayable"] for g in topic.as_dict()["groups"]}
    assert groups == {
        (UNKNOWN, UNREADABLE): False,
        (UNKNOWN, UNKNOWN): False,
        ("postgres", "postgres_23514"): True,
    }


class FakeConsumer:
    """What LetterReader asks of a KafkaConsumer, over an in-memory partition 0 (pure logic)."""

    def __init__(self, log: dict[int, Message], end: int) -> None:
        self.log, self.end, self.at = log, end, 0
        self.polls = 0

    def assign(self, partitions: list[Any]) -> None:
        self.tp = partitions[0]

    def seek(self, tp: Any, offset: int) -> None:
        self.at = offset

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Message]]:
        self.polls += 1
        out = []
        while self.at < self.end and len(out) < 2:  # two records per poll
            if self.at in self.log:
                out.append(self.log[self.at])
            self.at += 1  # an offset without a record (a transaction marker) is passed over
        return {self.tp: out} if out else {}

    def position(self, tp: Any) -> int:
        return self.at


def reader_over(consumer: FakeConsumer) -> LetterReader:
    reader = LetterReader("unused:9092", 1000)
    reader._consumer = consumer  # type: ignore[assignment]
    return reader


def test_the_reader_counts_only_what_a_topic_gained_and_starts_over_when_its_log_went_back() -> None:
    log = {o: letter(o, "hdfs", "hdfs_x", f"r{o}") for o in (0, 1, 2, 4, 5)}  # 3: a marker
    consumer = FakeConsumer(log, end=6)
    reader = reader_over(consumer)
    first = reader.refresh("t-dlq", {0: 0}, {0: 4}, budget_s=5)  # records past the end wait
    assert (first.read, sum(first.counts.values()), first.position) == (4, 3, {0: 4})
    second = reader.refresh("t-dlq", {0: 0}, {0: 6}, budget_s=5)
    assert (second.read, sum(second.counts.values()), second.as_dict()["last_offset"]) == (6, 5, 5)
    polls = consumer.polls
    reader.refresh("t-dlq", {0: 0}, {0: 6}, budget_s=5)
    assert consumer.polls == polls  # nothing new: not read again
    consumer.log, consumer.end = {0: letter(0, "postgres", "p", "new")}, 1  # re-created, shorter
    again = reader.refresh("t-dlq", {0: 0}, {0: 1}, budget_s=5)
    assert dict(again.counts) == {("postgres", "p"): 1} and again.read == again.records == 1


def test_a_large_backlog_is_read_in_parts_within_the_budget() -> None:
    consumer = FakeConsumer({o: letter(o, "hdfs", "k", "r") for o in range(100)}, end=100)
    reader = reader_over(consumer)
    part = reader.refresh("t-dlq", {0: 0}, {0: 100}, budget_s=0)  # one poll, then the budget is spent
    assert part.read == 2 and part.as_dict()["complete"] is False
    whole = reader.refresh("t-dlq", {0: 0}, {0: 100}, budget_s=5)
    assert whole.read == 100 and whole.counts[("hdfs", "k")] == 100


def test_lag_counts_from_the_log_start_without_a_commit_or_below_it() -> None:
    tps = ["p0", "p1", "p2"]
    end, begin = {"p0": 10, "p1": 10, "p2": 10}, {"p0": 0, "p1": 4, "p2": 0}
    committed = {"p0": SimpleNamespace(offset=7), "p1": SimpleNamespace(offset=2)}  # p1 below its start
    assert topic_lag(tps, end, begin, committed) == (3 + 6 + 10, 7 + 4 + 0)


def test_the_rate_is_over_the_last_minute_only() -> None:
    history: deque[tuple[float, int]] = deque()
    assert rate(history, 0.0, 100) is None
    assert rate(history, 10.0, 600) == 50.0
    assert rate(history, 3600.0, 600) is None  # an hour later: the old samples are gone
    assert rate(history, 3620.0, 800) == 10.0


def test_the_ledger_marks_what_replays_dealt_with() -> None:
    entry = {
        "topic": "t-dlq",
        "groups": [
            {"sink": "postgres", "error_kind": "k", "count": 5},
            {"sink": "hdfs", "error_kind": "x", "count": 2},
        ],
        "newest": [{"partition": 0, "offset": 9}, {"partition": 0, "offset": 8}],
    }
    merge_ledger(entry, {("postgres", "k"): {"replayed": 3, "parked": 1}}, {("t-dlq", 0, 9): "replayed"})
    assert [(g["pending"], g["handled"]) for g in entry["groups"]] == [
        (1, {"replayed": 3, "parked": 1}),
        (2, {}),
    ]
    assert entry["pending"] == 3 and [x["outcome"] for x in entry["newest"]] == ["replayed", None]

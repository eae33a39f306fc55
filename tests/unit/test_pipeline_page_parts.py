"""The Pipeline page's pure parts: its settings, the consumers' metrics it reads, the DLQ counts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from consumers.metrics import ConsumerMetrics
from crawlstore.dlq import H_CONNECTOR, H_ERROR_KIND, H_EXC_MESSAGE, H_FAILED_AT
from crawlstore.settings import PageSettings
from crawlstore.ui.letters import TEXT_MAX, TopicLetters
from crawlstore.ui.state import parse_metrics

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

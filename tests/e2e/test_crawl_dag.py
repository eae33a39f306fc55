"""The crawl DAGs end to end on the native stack: demo site → validate → Kafka and its DLQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from crawlstore.dlq import failure_context
from crawlstore.items import item_type
from crawlstore.messages import H_CONTENT_TYPE, H_RUN_ID, H_SCHEMA, H_SOURCE
from demo.site import expected_outcomes, label_of

ProductItem = item_type("product")
ReadingItem = item_type("reading")

pytestmark = pytest.mark.e2e

SHOP_DATE = datetime(2026, 11, 20, tzinfo=UTC)
# A manual run's data interval is the last complete hour before its date: [07:00, 08:00), the
# window the demo manifest describes.
SENSOR_DATE = datetime(2025, 6, 14, 8, tzinfo=UTC)
SENSOR_WINDOW = (datetime(2025, 6, 14, 7, tzinfo=UTC), SENSOR_DATE)


def of_run(messages: list[Any], run_id: str) -> list[Any]:
    return [m for m in messages if dict(m.headers).get(H_RUN_ID) == run_id.encode()]


def assert_dead_letters(
    letters: list[Any], kind: str, topic: str, expected: dict[str, frozenset[str]]
) -> None:
    by_label = {label_of(kind, json.loads(m.value)): m for m in letters}
    assert len(by_label) == len(letters)  # each invalid item once
    assert set(by_label) == set(expected)
    for label, message in by_label.items():
        ctx = failure_context(message.headers)
        assert (ctx.topic, ctx.connector, ctx.stage) == (topic, "validate", "VALIDATE")
        assert ctx.exception_class == "crawlstore.messages.RecordRejected"
        assert ctx.attempts == 1 and ctx.replay_count == 0 and ctx.failed_at is not None
        for field in expected[label]:  # the reason names every failing field
            assert field in ctx.exception_message, (label, ctx.exception_message)


def test_shop_dag_publishes_exactly_the_valid_products(dagbag: Any, topic_window: Any) -> None:
    main, dlq = topic_window("crawl.products"), topic_window("crawl.products-dlq")
    run = dagbag.dags["crawl_demo_shop"].test(logical_date=SHOP_DATE)
    assert run.state == "success"
    expected = expected_outcomes()["product"]

    published = of_run(main.read(), run.run_id)
    assert len(published) == len(expected.valid)
    assert {m.key.decode() for m in published} == expected.valid
    for m in published:
        item = ProductItem.model_validate_json(m.value)
        assert item.key == m.key.decode()
        assert m.timestamp == int(item.crawled_at.timestamp() * 1000)
        headers = dict(m.headers)
        assert headers[H_CONTENT_TYPE] == b"application/json"
        assert headers[H_SCHEMA] == b"crawlstore.product.v1"
        assert headers[H_SOURCE] == b"demo_shop"
    names = {ProductItem.model_validate_json(m.value).name for m in published}
    assert any("DROP TABLE" in n for n in names)  # hostile but valid text travels verbatim
    assert any(any("\uac00" <= ch <= "\ud7a3" for ch in n) for n in names)  # Hangul

    assert_dead_letters(of_run(dlq.read(), run.run_id), "product", "crawl.products", dict(expected.invalid))

    # A second run of the same logical date publishes the same entities again, nothing new.
    again_window = topic_window("crawl.products")
    again = dagbag.dags["crawl_demo_shop"].test(logical_date=SHOP_DATE)
    assert again.state == "success"
    assert {m.key.decode() for m in of_run(again_window.read(), again.run_id)} == expected.valid


def test_sensor_dag_publishes_the_readings_of_its_interval(dagbag: Any, topic_window: Any) -> None:
    main, dlq = topic_window("crawl.readings"), topic_window("crawl.readings-dlq")
    run = dagbag.dags["crawl_demo_sensors"].test(logical_date=SENSOR_DATE)
    assert run.state == "success"
    assert (run.data_interval_start, run.data_interval_end) == SENSOR_WINDOW
    expected = expected_outcomes()["reading"]

    published = of_run(main.read(), run.run_id)
    assert {m.key.decode() for m in published} == expected.valid
    assert len(published) == len(expected.valid)
    for m in published:
        reading = ReadingItem.model_validate_json(m.value)
        assert SENSOR_WINDOW[0] <= reading.measured_at < SENSOR_WINDOW[1]
        assert dict(m.headers)[H_SCHEMA] == b"crawlstore.reading.v1"
    assert_dead_letters(of_run(dlq.read(), run.run_id), "reading", "crawl.readings", dict(expected.invalid))

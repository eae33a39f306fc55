"""The OpenSearch consumer against real Kafka and OpenSearch: documents, versions, replays, refusals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from consumers.opensearch import OFFSET_BITS, OpenSearchSink
from crawlstore.settings import OpenSearchSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def index_prefix(opensearch_url: str) -> Iterator[str]:
    """A unique index prefix (the sink's indices are <prefix>products and <prefix>readings)."""
    prefix = f"test-{uuid.uuid4().hex[:10]}-"
    yield prefix
    for kind in ("products", "readings"):
        requests.delete(f"{opensearch_url}/{prefix}{kind}", timeout=30)
        requests.delete(f"{opensearch_url}/_index_template/{prefix}{kind}", timeout=30)


def test_lands_documents_per_kind_and_a_redelivery_changes_nothing(
    kit: Any, topic: str, producer: Any, run_consumer: Any, opensearch_url: str, index_prefix: str
) -> None:
    items = [kit.product(f"p{i}", i, brand="Ünïcode & <b>bold</b>") for i in range(250)] + [
        kit.reading(f"r{i}", i) for i in range(150)
    ]
    sent = producer(topic, items)
    consumer = run_consumer("opensearch", topics=topic, opensearch_index_prefix=index_prefix)
    products_index, readings_index = f"{index_prefix}products", f"{index_prefix}readings"
    kit.eventually(
        "400 documents",
        lambda: (
            kit.os_count(opensearch_url, products_index) == 250
            and kit.os_count(opensearch_url, readings_index) == 150
        ),
    )
    docs = {**kit.os_search(opensearch_url, products_index), **kit.os_search(opensearch_url, readings_index)}
    for s in sent:
        source = docs[s.item.key]["_source"]
        assert source["crawled_at"].replace("Z", "+00:00") == s.item.crawled_at.isoformat()
        assert source["kafka"] == {
            "topic": topic,
            "partition": s.partition,
            "offset": s.offset,
            "timestamp": s.timestamp_ms,
        }
        if s.item.kind == "product":
            assert (source["name"], source["brand"], Decimal(source["price"])) == (
                s.item.name,
                s.item.brand,
                s.item.price,
            )
        else:
            assert (source["device_id"], source["sensor1"], source["is_fail"]) == (
                s.item.device_id,
                s.item.sensor1,
                s.item.is_fail,
            )

    # The project owns the mapping: strict, typed.
    mapping = requests.get(f"{opensearch_url}/{products_index}/_mapping", timeout=10).json()
    props = mapping[products_index]["mappings"]
    assert props["dynamic"] == "strict"
    assert props["properties"]["price"]["type"] == "scaled_float"
    assert requests.get(f"{opensearch_url}/_index_template/{products_index}", timeout=10).status_code == 200
    assert consumer.stop() == 0

    # Same records again through a new group (no committed offsets): every write is a 409 no-op.
    again = run_consumer("opensearch", topics=topic, opensearch_index_prefix=index_prefix)
    kit.eventually(
        "the replay went through", lambda: again.metric("crawlstore_consumer_records_written_total") == 400
    )
    after = {**kit.os_search(opensearch_url, products_index), **kit.os_search(opensearch_url, readings_index)}
    assert {k: (d["_version"], d["_seq_no"], d["_source"]) for k, d in after.items()} == {
        k: (d["_version"], d["_seq_no"], d["_source"]) for k, d in docs.items()
    }
    assert again.metric("crawlstore_consumer_records_dead_lettered_total") == 0
    assert again.stop() == 0


def test_newer_crawl_wins_and_a_late_older_record_is_a_no_op(
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    opensearch_url: str,
    index_prefix: str,
    read_topic: Any,
) -> None:
    v1 = kit.product("k1", 0, name="version one")
    v2 = kit.product("k1", 0, name="version two", crawled_at=v1.crawled_at + timedelta(minutes=5))
    consumer = run_consumer("opensearch", topics=topic, opensearch_index_prefix=index_prefix)
    consumer.wait_healthy()
    producer(topic, [v1, v2])
    index = f"{index_prefix}products"
    kit.eventually(
        "version two indexed",
        lambda: (
            kit.os_search(opensearch_url, index).get("k1", {}).get("_source", {}).get("name") == "version two"
        ),
    )
    producer(topic, [v1])  # late: higher offset, older crawl
    kit.eventually(
        "late record consumed", lambda: consumer.metric("crawlstore_consumer_records_written_total") == 3
    )
    doc = kit.os_search(opensearch_url, index)["k1"]
    assert doc["_source"]["name"] == "version two"
    assert read_topic(f"{topic}-dlq") == []  # a version conflict is success, not a dead letter
    assert consumer.stop() == 0


def test_a_document_opensearch_refuses_goes_to_the_dlq_and_the_rest_lands(
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    opensearch_url: str,
    index_prefix: str,
    read_topic: Any,
) -> None:
    # An index created before the sink, with a narrower type than the sink's mapping.
    index = f"{index_prefix}products"
    created = requests.put(
        f"{opensearch_url}/{index}",
        json={"mappings": {"properties": {"review_count": {"type": "short"}}}},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    fits = [kit.product(f"ok{i}", i, review_count=i) for i in range(20)]
    too_big = [kit.product(f"big{i}", i, review_count=100_000 + i) for i in range(3)]
    sent = producer(topic, fits[:10] + too_big + fits[10:])
    consumer = run_consumer("opensearch", topics=topic, opensearch_index_prefix=index_prefix)
    kit.eventually("the fitting documents landed", lambda: kit.os_count(opensearch_url, index) == 20)
    kit.eventually("three dead letters", lambda: len(read_topic(f"{topic}-dlq")) == 3)
    letters = read_topic(f"{topic}-dlq")
    bad = {s.key: s for s in sent if s.key.startswith(b"big")}
    assert {r.key for r in letters} == set(bad)
    for r in letters:
        h = dict(r.headers)
        assert h["__connect.errors.connector.name"] == b"opensearch"
        assert h["__connect.errors.stage"] == b"TASK_PUT"
        assert (
            b"mapper_parsing_exception" in h["crawlstore.dlq.error_kind"]
            or b"parsing" in h["crawlstore.dlq.error_kind"]
        )
        assert r.value == bad[r.key].value
        assert (int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"])) == (
            bad[r.key].partition,
            bad[r.key].offset,
        )
    assert "conflicts with the sink's" in consumer.log_text()
    assert consumer.alive()
    assert consumer.stop() == 0


def test_a_closed_index_is_waited_for_and_nothing_is_dead_lettered(
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    opensearch_url: str,
    index_prefix: str,
    read_topic: Any,
) -> None:
    index = f"{index_prefix}products"
    consumer = run_consumer("opensearch", topics=topic, opensearch_index_prefix=index_prefix)
    consumer.wait_healthy()
    producer(topic, [kit.product(f"before{i}", i) for i in range(20)])
    kit.eventually("the first documents", lambda: kit.os_count(opensearch_url, index) == 20)
    assert requests.post(f"{opensearch_url}/{index}/_close", timeout=30).status_code == 200
    try:
        producer(topic, [kit.product(f"while{i}", i) for i in range(20)])
        kit.eventually(
            "the consumer retrying", lambda: consumer.metric("crawlstore_consumer_retries_total") > 0, 60
        )
        assert read_topic(f"{topic}-dlq") == []
    finally:
        assert requests.post(f"{opensearch_url}/{index}/_open", timeout=30).status_code == 200
    kit.eventually(
        "every document once the index is open", lambda: kit.os_count(opensearch_url, index) == 40, 90
    )
    assert read_topic(f"{topic}-dlq") == []
    assert "index_closed_exception" in consumer.log_text()
    assert consumer.stop() == 0


def test_a_later_record_of_the_same_millisecond_wins_across_the_tie_break_wrap(
    kit: Any, opensearch_url: str, index_prefix: str
) -> None:
    """The external version keeps 21 bits of the offset: offset 2,097,152 has a lower version than
    2,097,151 in the same millisecond. The sink compares such refusals with the stored document in
    full, so the later record of the partition still wins, and an earlier one still changes nothing."""
    wrap = 1 << OFFSET_BITS
    topic, key = "tie.products", "tie-1"
    when = kit.product(key).crawled_at
    sink = OpenSearchSink(OpenSearchSettings(), index_prefix)

    def write(first: int, *names: str) -> None:
        items = [kit.product(key, 0, crawled_at=when, name=name) for name in names]
        assert sink.put(kit.batch_of(kit.decoded(items, topic, 0, first))) == []

    def stored() -> tuple[str, int]:
        doc = kit.os_search(opensearch_url, f"{index_prefix}products")[key]
        return doc["_source"]["name"], doc["_source"]["kafka"]["offset"]

    try:
        sink.start()
        for offset in (wrap - 1, wrap, wrap + 5):  # one batch each, same crawl time
            write(offset, f"at {offset}")
            assert stored() == (f"at {offset}", offset)
        write(wrap, "redelivered")  # an earlier record again: no change
        assert stored() == (f"at {wrap + 5}", wrap + 5)
        write(2 * wrap - 1, "before the next wrap", "after it")  # both in one bulk request
        assert stored() == ("after it", 2 * wrap)
    finally:
        sink.stop()

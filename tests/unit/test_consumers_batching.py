"""Batching: what a batch accounts for, and when it is due."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from consumers.batching import Batch, BatchPolicy, Decoded, Rejection, to_record
from crawlstore.dlq import STAGE_DESERIALIZE, STAGE_SINK
from crawlstore.items import item_type, to_json_dict
from crawlstore.messages import Record, RecordRejected

ProductItem = item_type("product")

pytestmark = pytest.mark.unit


def record(partition: int, offset: int, value: bytes = b"x" * 10, topic: str = "t") -> Record:
    return Record(topic, partition, offset, b"k", value)


def decoded(partition: int, offset: int) -> Decoded:
    item = ProductItem(
        source="s",
        crawled_at=datetime(2026, 1, 1, tzinfo=UTC),
        product_id=f"p{offset}",
        name="n",
        price=Decimal(1),
        currency="EUR",
        url="https://x.example/",
    )
    return Decoded(record(partition, offset), item)


def rejected(partition: int, offset: int) -> Rejection:
    return Rejection(record(partition, offset), RecordRejected("invalid_json", "no"), STAGE_DESERIALIZE)


def test_batch_tracks_offset_ranges_including_rejected_records() -> None:
    batch = Batch()
    batch.add_item(decoded(0, 5), now=1.0)
    batch.add_rejected(rejected(0, 6), now=1.1)
    batch.add_item(decoded(1, 9), now=1.2)
    assert batch.next_offsets() == {TopicPartition("t", 0): 7, TopicPartition("t", 1): 10}
    assert len(batch) == 3
    assert batch.size_bytes == 3 * 11
    assert (batch.started_at, batch.last_added_at) == (1.0, 1.2)


def test_outcomes_follow_arrival_order_and_count_store_refusals() -> None:
    batch = Batch()
    batch.add_item(decoded(0, 1), now=0)
    batch.add_rejected(rejected(0, 2), now=0)
    batch.add_item(decoded(0, 3), now=0)
    refused = [Rejection(record(0, 3), Exception("refused"), STAGE_SINK)]
    assert batch.outcomes(refused) == [False, True, True]
    assert batch.outcomes([]) == [False, True, False]


def test_dropping_a_revoked_partition_forgets_everything_of_it() -> None:
    batch = Batch()
    batch.add_item(decoded(0, 1), now=0)
    batch.add_rejected(rejected(1, 2), now=0)
    batch.add_item(decoded(1, 3), now=0)
    batch.dead_lettered.add(("t", 1, 2))
    assert batch.drop_partitions([TopicPartition("t", 1)]) == 2
    assert batch.next_offsets() == {TopicPartition("t", 0): 2}
    assert [d.record.offset for d in batch.items] == [1]
    assert batch.rejected == [] and batch.dead_lettered == set()
    assert batch.size_bytes == 11
    assert batch.drop_partitions([TopicPartition("t", 7)]) == 0


def test_dropping_records_discards_what_the_sink_prepared_of_them() -> None:
    batch = Batch()
    batch.add_item(decoded(0, 1), now=0)
    batch.add_item(decoded(1, 3), now=0)
    batch.prepared = b"encoded items of both partitions"
    batch.drop_partitions([TopicPartition("t", 7)])
    assert batch.prepared is not None  # nothing dropped, nothing to redo
    batch.drop_partitions([TopicPartition("t", 1)])
    assert batch.prepared is None  # put() encodes the remaining items again


def test_a_record_added_after_prepare_discards_what_was_prepared() -> None:
    batch = Batch()
    batch.add_item(decoded(0, 1), now=0)
    batch.prepared = b"encoded first record"
    batch.add_item(decoded(0, 2), now=0)
    assert batch.prepared is None  # else put() would store one record and commit two


POLICY = BatchPolicy(max_records=3, max_bytes=1000, max_wait_s=5.0, idle_s=1.0)


def test_empty_batch_is_never_due() -> None:
    assert POLICY.due(Batch(), now=100.0) is None
    assert POLICY.seconds_until_due(Batch(), now=100.0) is None


def test_due_by_count() -> None:
    batch = Batch()
    for i in range(3):
        batch.add_item(decoded(0, i), now=0.0)
    assert POLICY.due(batch, now=0.0) == "records"


def test_due_by_bytes() -> None:
    batch = Batch()
    batch.add_rejected(Rejection(record(0, 0, b"x" * 2000), Exception(), STAGE_DESERIALIZE), now=0.0)
    assert POLICY.due(batch, now=0.0) == "bytes"


def test_due_by_age_even_while_records_keep_coming() -> None:
    batch = Batch()
    for t in (0.0, 0.9, 1.8, 2.7):
        batch = Batch() if len(batch) == 2 else batch
        batch.add_item(decoded(0, int(t * 10)), now=t)
    steady = Batch()
    steady.add_item(decoded(0, 0), now=0.0)
    steady.add_item(decoded(0, 1), now=4.5)
    assert POLICY.due(steady, now=4.9) is None
    assert POLICY.due(steady, now=5.0) == "time"


def test_due_when_input_goes_idle() -> None:
    batch = Batch()
    batch.add_item(decoded(0, 0), now=10.0)
    assert POLICY.due(batch, now=10.5) is None
    assert POLICY.seconds_until_due(batch, now=10.5) == pytest.approx(0.5)
    assert POLICY.due(batch, now=11.0) == "idle"
    assert POLICY.seconds_until_due(batch, now=11.0) == 0.0


def test_room_never_asks_for_zero_records() -> None:
    batch = Batch()
    assert POLICY.room(batch) == 3
    for i in range(5):
        batch.add_item(decoded(0, i), now=0)
    assert POLICY.room(batch) == 1


def test_document_is_the_item_plus_lineage_on_one_line() -> None:
    d = decoded(2, 41)
    item = d.item.model_copy(update={"name": 'line one\nline "two" \u00e9'})
    doc = Decoded(Record("crawl.products", 2, 41, b"p41", b"{}", 1_700_000_000_000), item).document()
    assert b"\n" not in doc
    assert json.loads(doc) == {
        **to_json_dict(item),
        "kafka": {"topic": "crawl.products", "partition": 2, "offset": 41, "timestamp": 1_700_000_000_000},
    }
    no_ts = Decoded(Record("t", 0, 1, b"k", b"{}"), item).document()
    assert json.loads(no_ts)["kafka"]["timestamp"] is None


def test_consumed_record_keeps_its_headers_and_null_values_become_empty() -> None:
    def consumed(headers: list[tuple[str, bytes | None]] | None) -> ConsumerRecord:
        return ConsumerRecord("t", 1, 0, 7, 1_700_000_000_000, 0, b"k", b"v", headers, None, 1, 1, 1)

    record = to_record(consumed([("a", b"1"), ("b", None), ("c", b"")]))
    assert record.headers == (("a", b"1"), ("b", b""), ("c", b""))
    assert (record.topic, record.partition, record.offset) == ("t", 1, 7)
    assert record.timestamp_ms == 1_700_000_000_000
    assert to_record(consumed(None)).headers == ()

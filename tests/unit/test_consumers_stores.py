"""Pure parts of the store sinks: OpenSearch versions, PostgreSQL statement rounds and SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from consumers.batching import Decoded
from consumers.opensearch import MAX_MS, OFFSET_BITS, external_version, possible_tie
from consumers.postgres import rounds, row_values
from consumers.postgres_schema import TableSpec
from crawlstore.config import current
from crawlstore.items import item_type
from crawlstore.messages import Record

ProductItem = item_type("product")
PRODUCTS = TableSpec.for_kind(current().kinds["product"])
READINGS = TableSpec.for_kind(current().kinds["reading"])

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_version_orders_by_crawl_time_first() -> None:
    older_at_high_offset = external_version(T0, 10_000_000)
    newer_at_low_offset = external_version(T0 + timedelta(milliseconds=1), 3)
    assert newer_at_low_offset > older_at_high_offset


def test_version_breaks_ties_within_a_millisecond_by_offset() -> None:
    assert external_version(T0, 6) > external_version(T0, 5)
    assert external_version(T0 + timedelta(microseconds=500), 5) == external_version(T0, 5)


def test_the_same_record_always_gets_the_same_version() -> None:
    assert external_version(T0, 42) == external_version(T0.astimezone(UTC), 42)


def test_versions_stay_valid_longs_for_any_crawl_time() -> None:
    for when in (datetime(1900, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), T0):
        v = external_version(when, 2**40)
        assert 0 <= v < 2**63
    assert external_version(datetime(9999, 1, 1, tzinfo=UTC), 0) == MAX_MS << OFFSET_BITS


def _conflict(current: int, provided: int) -> str:
    return (
        f"[k]: version conflict, current version [{current}] "
        f"is higher or equal to the one provided [{provided}]"
    )


def test_a_refusal_by_a_version_of_the_same_or_next_millisecond_is_checked_as_a_possible_tie() -> None:
    wrap = 1 << OFFSET_BITS
    before, after = external_version(T0, wrap - 1), external_version(T0, wrap)  # wrapped: after < before
    assert after < before
    assert possible_tie(after, _conflict(before, after)) == before
    lifted = before + 1  # a settled tie lifts the stored version into the next millisecond's range
    assert possible_tie(external_version(T0, wrap + 5), _conflict(lifted, 0)) == lifted
    # A record a millisecond or more older, or an error of another kind: the version's verdict stands.
    older = external_version(T0 - timedelta(milliseconds=2), 7)
    assert possible_tie(older, _conflict(before, older)) is None
    assert possible_tie(after, "mapper_parsing_exception") is None


def decoded(key: str, offset: int, seconds: int = 0) -> Decoded:
    item = ProductItem(
        source="s",
        crawled_at=T0 + timedelta(seconds=seconds),
        product_id=key,
        name="n",
        price=Decimal("1.50"),
        currency="EUR",
        url="https://x.example/",
    )
    return Decoded(Record("t", 0, offset, key.encode(), b'{"a": 1}'), item)


def test_rounds_never_put_a_key_twice_in_one_statement() -> None:
    rows = [decoded("a", 1), decoded("b", 2), decoded("a", 3), decoded("a", 4), decoded("c", 5)]
    out = rounds(rows)
    assert [[d.record.offset for d in r] for r in out] == [[1, 2, 5], [3], [4]]
    for r in out:
        keys = [d.item.key for d in r]
        assert len(keys) == len(set(keys))


def test_row_values_are_typed_columns_then_raw_json_text_and_lineage() -> None:
    values = row_values(PRODUCTS, decoded("a", 7))
    assert len(values) == len(PRODUCTS.all_columns)
    assert values[PRODUCTS.all_columns.index("price")] == Decimal("1.50")
    assert values[-4:] == ('{"a": 1}', "t", 0, 7)


def test_upsert_has_the_stale_write_guard_and_quotes_identifiers() -> None:
    text = repr(PRODUCTS.upsert())
    assert "ON CONFLICT" in text and "EXCLUDED" in text
    assert "(EXCLUDED.crawled_at, EXCLUDED.kafka_offset) > (t.crawled_at, t.kafka_offset)" in text
    assert "Identifier('products')" in text
    assert PRODUCTS.template().count("%s") == len(PRODUCTS.all_columns)
    assert "%s::jsonb" in READINGS.template()


def test_bulk_payload_is_an_action_and_a_document_per_item() -> None:
    from consumers.opensearch import OpenSearchSink
    from crawlstore.settings import OpenSearchSettings

    sink = OpenSearchSink(OpenSearchSettings(url="http://127.0.0.1:1"), index_prefix="p-")
    rows = [decoded("a:1.b-c_d", 3), decoded("b", 4, seconds=1)]
    lines = sink.payload(rows).split(b"\n")
    assert lines[-1] == b""  # _bulk wants a newline after the last line
    actions = [json.loads(line) for line in lines[0:-1:2]]
    assert actions == [
        {
            "index": {
                "_index": "p-products",
                "_id": d.item.key,
                "version": external_version(d.item.crawled_at, d.record.offset),
                "version_type": "external",
            }
        }
        for d in rows
    ]
    assert [json.loads(line)["product_id"] for line in lines[1:-1:2]] == [d.item.key for d in rows]


def test_postgres_encodes_each_table_once_as_copy_text() -> None:
    from consumers.postgres import PostgresSink, copy_text

    tricky = decoded("a", 1)
    tricky = Decoded(tricky.record, tricky.item.model_copy(update={"name": "a\tb\\c\nd"}))
    rows = [tricky, decoded("e", 2)]
    from crawlstore.settings import PostgresSettings

    settings = PostgresSettings(host="x", db="x", user="x", password="x")  # type: ignore[arg-type]
    tables = PostgresSink(settings, "group").encode(rows)
    assert list(tables) == [PRODUCTS]
    got_rows, text = tables[PRODUCTS]
    assert got_rows == rows
    assert text == copy_text(PRODUCTS, rows)
    first = text.split("\n")[0].split("\t")
    assert first[1] == "a\\tb\\\\c\\nd"  # the name, escaped, still one field
    assert len(first) == len(PRODUCTS.all_columns)

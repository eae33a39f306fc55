"""Parquet rows typed from a kind's declaration; a value Arrow cannot take rejects its record alone."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consumers import parquet
from consumers.batching import Decoded
from crawlstore.config import KindSpec
from crawlstore.items import derive
from crawlstore.messages import Record

pytestmark = pytest.mark.unit

KIND = KindSpec.model_validate(
    {
        "kind": "lot",
        "key": "lot_id",
        "fields": {
            "lot_id": {"type": "identifier", "required": True},
            "count": {"type": "integer"},  # no bounds: a Python int may not fit in 64 bits
            "price": {"type": "decimal", "digits": 10, "places": 2},
            "weight": {"type": "decimal"},
            "tags": {"type": "list[text]"},
            "extra": {"type": "json"},
            "sold_on": {"type": "date"},
        },
    }
)


def decoded(offset: int, **values: object) -> Decoded:
    model = derive(KIND)
    item = model.model_validate(
        {"source": "s", "crawled_at": datetime(2026, 1, 1, tzinfo=UTC), "lot_id": f"L{offset}", **values}
    )
    return Decoded(Record("t", 0, offset, b"k", b"{}", 10**15 * 300, ()), item)


def test_columns_are_typed_from_the_declaration_and_rows_keep_their_values() -> None:
    schema = parquet.arrow_schema(KIND)
    assert [schema.field(n).type for n in ("count", "price", "weight", "tags", "extra", "sold_on")] == [
        pa.int64(),
        pa.decimal128(10, 2),
        pa.string(),
        pa.list_(pa.string()),
        pa.string(),
        pa.date32(),
    ]
    d = decoded(5, count=3, price="12.50", weight="0.000000000001", tags=["a"], extra={"k": [1]})
    content = parquet.encode([parquet.row(d)], schema)
    [back] = pq.read_table(pa.BufferReader(content)).to_pylist()
    assert (back["count"], back["price"], back["weight"], back["extra"]) == (
        3,
        Decimal("12.50"),
        "1E-12",
        '{"k": [1]}',
    )
    # A Kafka timestamp past year 9999 is kept as epoch milliseconds, not refused.
    assert parquet.lineage(content) == [
        {"topic": "t", "partition": 0, "offset": 5, "timestamp": back["kafka"]["timestamp"]}
    ]


def test_a_value_arrow_cannot_take_rejects_that_record_only() -> None:
    rows = [parquet.row(decoded(i, count=2**70 if i == 1 else i)) for i in range(3)]
    bad = parquet.unconvertible(rows, parquet.arrow_schema(KIND))
    assert list(bad) == [1]
    assert bad[1].kind == "parquet_value" and "int" in str(bad[1]).lower()

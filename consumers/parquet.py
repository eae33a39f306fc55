"""Parquet files for the HDFS sink, typed from the kind's declaration (pyarrow).

One row per record: the kind's fields in declaration order with their declared types, then
`source`, `crawled_at` and the `kafka` lineage struct (topic, partition, offset, timestamp),
the same columns a JSON Lines file holds as keys. Files are self-describing: the kind and its
declaration version are in the schema's metadata, and a kind that gained a field writes the new
column from then on (readers merge schemas by name).

A value Arrow cannot take (a decimal beyond its declared precision, say) rejects that record
alone, with the reason; the rest of the batch is written.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from consumers.batching import Decoded
from consumers.errors import StoreRejected
from crawlstore.config import FieldSpec, KindSpec

INT32 = 2**31 - 1
KAFKA = pa.struct(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.int64()),  # epoch ms, as in JSON Lines: Kafka's has no calendar limits
    ]
)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def arrow_type(spec: FieldSpec) -> pa.DataType:
    """The column type of a declared field (as close to the PostgreSQL column as Arrow has)."""
    t = spec.type
    if t == "decimal":
        # Exact either way: a declared scale is a decimal column, an open one keeps the text.
        return pa.decimal128(spec.digits or 38, spec.places) if spec.places is not None else pa.string()
    if t == "integer":
        small = spec.min is not None and spec.max is not None and spec.min >= -INT32 and spec.max <= INT32
        return pa.int32() if small else pa.int64()
    return {
        "float": pa.float64(),
        "boolean": pa.bool_(),
        "timestamp": TIMESTAMP,
        "date": pa.date32(),
        "list[text]": pa.list_(pa.string()),
    }.get(t, pa.string())  # text, identifier, url, enum; json as its JSON text


def arrow_schema(kind: KindSpec) -> pa.Schema:
    fields = [pa.field(name, arrow_type(f), nullable=True) for name, f in kind.fields.items()]
    fields += [pa.field("source", pa.string()), pa.field("crawled_at", TIMESTAMP), pa.field("kafka", KAFKA)]
    return pa.schema(fields, metadata={"crawlstore.kind": kind.schema_version})


def row(decoded: Decoded) -> dict[str, Any]:
    """The record as a row of its kind's schema."""
    item, r = decoded.item, decoded.record
    values = item.model_dump()
    for name, spec in item.spec.fields.items():
        value = values.get(name)
        if value is None:
            continue
        if spec.type == "json":
            values[name] = json.dumps(value, ensure_ascii=False)
        elif spec.type == "decimal" and spec.places is None:
            values[name] = str(value)
    values["crawled_at"] = item.crawled_at.astimezone(UTC)
    values["kafka"] = {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp_ms,
    }
    return values


def unconvertible(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> dict[int, StoreRejected]:
    """The rows Arrow cannot take under `schema`, by index, each with the reason."""
    try:
        pa.Table.from_pylist(list(rows), schema=schema)
        return {}
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    bad: dict[int, StoreRejected] = {}
    for i, one in enumerate(rows):
        try:
            pa.Table.from_pylist([one], schema=schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            bad[i] = StoreRejected("parquet_value", f"{type(exc).__name__}: {exc}")
    return bad


def encode(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> bytes:
    """One Parquet file (zstd, one row group) of rows that `unconvertible` passed."""
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), out, compression="zstd")
    return out.getvalue()


def lineage(content: bytes) -> list[dict[str, Any]]:
    """The `kafka` lineage of every row of a Parquet file."""
    table = pq.read_table(io.BytesIO(content), columns=["kafka"])
    lineages: list[dict[str, Any]] = table.column("kafka").to_pylist()
    return lineages


def without_offsets_below(content: bytes, first: int) -> bytes:
    """The same Parquet file (schema and metadata kept) without its rows of offsets below `first`."""
    import pyarrow.compute as pc

    table = pq.read_table(io.BytesIO(content))
    offsets = pc.struct_field(table.column("kafka"), "offset")
    out = io.BytesIO()
    pq.write_table(table.filter(pc.greater_equal(offsets, first)), out, compression="zstd")
    return out.getvalue()

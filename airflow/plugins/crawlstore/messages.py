"""The Kafka message contract: key = natural id, value = UTF-8 JSON of the item, timestamp = crawl
time, headers describe the item (docs/architecture.md#the-message). Producers and consumers both
use this module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from crawlstore.items import Item, schemas, to_json_dict

CONTENT_TYPE = "application/json"
H_CONTENT_TYPE = "content-type"
H_SCHEMA = "crawlstore.schema"
H_SOURCE = "crawlstore.source"
H_RUN_ID = "crawlstore.run_id"

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    """A Kafka record, independent of the client library that produced or consumed it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", errors="replace") if v is not None else None
        return None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class OutgoingRecord:
    """A record to produce: a pipeline message or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: list[tuple[str, bytes]]


class RecordRejected(Exception):
    """A record no retry can fix (bad bytes, bad JSON, schema violation): it goes to the DLQ."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode_item(item: Item, topic: str, run_id: str) -> OutgoingRecord:
    """The message carrying `item` to `topic`."""
    value = json.dumps(to_json_dict(item), ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (H_SCHEMA, item.schema_version.encode()),
        (H_SOURCE, item.source.encode()),
        (H_RUN_ID, run_id.encode()),
    ]
    return OutgoingRecord(topic, item.key.encode(), value, int(item.crawled_at.timestamp() * 1000), headers)


def decode_item(record: Record) -> Item:
    """Parse and validate a record's value; raise RecordRejected with the reason otherwise.

    Hot path of every consumer: a valid record is parsed and validated in one pass by pydantic's
    compiled JSON parser. A record that fails there goes through `_classify`, so the reason it is
    refused for does not depend on which parser noticed first.
    """
    item_type = schemas().get(record.header(H_SCHEMA) or "")
    if item_type is not None and record.value is not None:
        try:
            item = item_type.model_validate_json(record.value)
        except ValueError:  # ValidationError, incl. invalid JSON and too deep nesting
            pass
        else:
            if record.key is None or record.key == item.key.encode():
                return item
    _classify(record)
    # Python's json took what the compiled parser refused.
    raise RecordRejected("invalid_json", "value is not strict JSON (refused by the item parser)")


def _classify(record: Record) -> Item:
    """The slow path, step by step: raises RecordRejected with the first reason found."""
    if record.value is None:
        raise RecordRejected("empty_value", "record has no value (tombstone)")
    try:
        text = record.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordRejected("invalid_utf8", f"value is not UTF-8: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordRejected("invalid_json", f"value is not JSON: {exc}") from exc
    except RecursionError as exc:  # hostile nesting depth
        raise RecordRejected("invalid_json", "value is JSON nested too deeply to parse") from exc
    schema = record.header(H_SCHEMA)
    item_type = schemas().get(schema or "")
    if item_type is None:
        raise RecordRejected("unknown_schema", f"header {H_SCHEMA}={schema!r} names no known schema")
    if not isinstance(data, dict):
        raise RecordRejected("schema_violation", f"value is JSON {type(data).__name__}, not an object")
    try:
        item = item_type.model_validate(data)
    except ValidationError as exc:
        raise RecordRejected("schema_violation", describe_validation_error(exc)) from exc
    if record.key is not None and record.key != item.key.encode():
        raise RecordRejected("key_mismatch", f"key {record.key!r} is not the item's id {item.key!r}")
    return item


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """`field: message` for the first few errors, input values left out (they may be huge)."""
    parts = [f"{'.'.join(map(str, e['loc'])) or '(item)'}: {e['msg']}" for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")

"""The message and DLQ contracts that producers, consumers and the replay share."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from crawlstore import dlq
from crawlstore.items import item_type
from crawlstore.messages import H_RUN_ID, H_SCHEMA, Record, RecordRejected, decode_item, encode_item

ProductItem = item_type("product")

pytestmark = pytest.mark.unit

ITEM = ProductItem(
    source="demo_shop",
    crawled_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
    product_id="P-7",
    name="Lamp ü",
    price="19.99",
    currency="EUR",
    url="http://x/p/7",
)  # type: ignore[arg-type]


def record(
    value: bytes | None,
    key: bytes | None = b"P-7",
    headers: tuple[tuple[str, bytes], ...] | None = None,
) -> Record:
    if headers is None:
        headers = tuple(encode_item(ITEM, "crawl.products", "run-1").headers)
    return Record("crawl.products", 2, 41, key, value, 1_700_000_000_000, headers)


def test_encode_then_decode_round_trips() -> None:
    out = encode_item(ITEM, "crawl.products", "run-1")
    assert out.key == b"P-7"
    assert json.loads(out.value or b"")["price"] == "19.99"
    assert out.timestamp_ms == int(ITEM.crawled_at.timestamp() * 1000)
    assert dict(out.headers)[H_SCHEMA] == b"crawlstore.product.v1"
    assert dict(out.headers)[H_RUN_ID] == b"run-1"
    assert decode_item(record(out.value, headers=tuple(out.headers))) == ITEM


@pytest.mark.parametrize(
    ("value", "key", "kind"),
    [
        (None, b"P-7", "empty_value"),
        (b"\xff\xfe", b"P-7", "invalid_utf8"),
        (b"{not json", b"P-7", "invalid_json"),
        (b"[1, 2]", b"P-7", "schema_violation"),
        (b"[" * 100_000 + b"]" * 100_000, b"P-7", "invalid_json"),
        (b'{"product_id": "P-7"}', b"P-7", "schema_violation"),
    ],
)
def test_decode_rejects_with_a_kind(value: bytes | None, key: bytes, kind: str) -> None:
    with pytest.raises(RecordRejected) as exc:
        decode_item(record(value, key))
    assert exc.value.kind == kind


def test_decode_refuses_a_lone_surrogate() -> None:
    """Python's json takes a lone surrogate escape, the item parser not; no store could hold one."""
    value = json.dumps({**json.loads(encode_item(ITEM, "t", "r").value or b""), "name": "a\ud800b"})
    with pytest.raises(RecordRejected) as exc:
        decode_item(record(value.encode()))
    assert exc.value.kind == "schema_violation"
    assert "name" in str(exc.value)


def test_decode_rejects_unknown_schema_and_key_mismatch() -> None:
    good = encode_item(ITEM, "crawl.products", "run-1")
    with pytest.raises(RecordRejected, match="names no known schema"):
        decode_item(record(good.value, headers=()))
    with pytest.raises(RecordRejected) as exc:
        decode_item(record(good.value, key=b"other", headers=tuple(good.headers)))
    assert exc.value.kind == "key_mismatch"


def test_dead_letter_carries_connect_headers_and_our_own() -> None:
    original = record(b"{not json")
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    try:
        decode_item(original)
    except RecordRejected as exc:
        letter = dlq.dead_letter(
            original, connector="postgres-sink", stage=dlq.STAGE_DESERIALIZE, error=exc, now=now
        )
    assert letter.topic == "crawl.products-dlq"
    assert (letter.key, letter.value, letter.timestamp_ms) == (
        original.key,
        original.value,
        original.timestamp_ms,
    )
    h = dict(letter.headers)
    assert h[H_SCHEMA] == b"crawlstore.product.v1"  # the original headers stay
    assert h[dlq.H_TOPIC] == b"crawl.products" and h[dlq.H_PARTITION] == b"2" and h[dlq.H_OFFSET] == b"41"
    assert h[dlq.H_CONNECTOR] == b"postgres-sink" and h[dlq.H_STAGE] == b"VALUE_CONVERTER"
    assert h[dlq.H_EXC_CLASS] == b"crawlstore.messages.RecordRejected"
    assert h[dlq.H_EXC_MESSAGE].startswith(b"value is not JSON")
    assert b"Traceback" in h[dlq.H_EXC_STACKTRACE]
    assert h[dlq.H_ERROR_KIND] == b"invalid_json"
    assert h[dlq.H_FIRST_FAILED_AT] == h[dlq.H_FAILED_AT] == now.isoformat().encode()
    assert (h[dlq.H_ATTEMPTS], h[dlq.H_REPLAY_COUNT]) == (b"1", b"0")


def test_a_replay_that_fails_again_keeps_its_history() -> None:
    first = dlq.dead_letter(
        record(b"x"),
        connector="opensearch-sink",
        stage=dlq.STAGE_SINK,
        error=ValueError("mapping"),
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    replayed = Record(
        "crawl.products",
        0,
        99,
        first.key,
        first.value,
        first.timestamp_ms,
        tuple(dlq.replay_headers(first.headers)),
    )
    again = dlq.dead_letter(
        replayed,
        connector="opensearch-sink",
        stage=dlq.STAGE_SINK,
        error=ValueError("mapping"),
        now=datetime(2026, 11, 23, tzinfo=UTC),
    )
    ctx = dlq.failure_context(again.headers)
    assert again.topic == "crawl.products-dlq"
    assert (ctx.topic, ctx.partition, ctx.offset) == ("crawl.products", 2, 41)  # where it first came from
    assert ctx.first_failed_at == datetime(2026, 11, 20, tzinfo=UTC)
    assert ctx.failed_at == datetime(2026, 11, 23, tzinfo=UTC)
    assert (ctx.attempts, ctx.replay_count) == (2, 1)
    assert sum(1 for k, _ in again.headers if k == dlq.H_REPLAY_COUNT) == 1


def test_an_oversized_dead_letter_is_slimmed_keeping_its_key_reason_and_headers() -> None:
    from crawlstore.dlq import H_ERROR_KIND, H_EXC_MESSAGE, H_TRUNCATED_FROM, MAX_LETTER_BYTES, letter_size

    value = b'{"name": "' + b"A" * 2_000_000 + b'"}'
    record = Record("crawl.x", -1, -1, b"k1", value, 1, (("crawlstore.source", b"s"),))
    letter = dlq.dead_letter(
        record,
        connector="validate",
        stage="VALIDATE",
        error=RecordRejected("schema_violation", "name: too long"),
    )
    headers = dict(letter.headers)
    assert letter_size(letter) <= MAX_LETTER_BYTES and letter.key == b"k1"
    assert letter.value is not None and letter.value.startswith(value[:100_000])
    assert letter.value.endswith(b"...[cut by crawlstore: the value had %d bytes]" % len(value))
    assert headers[H_TRUNCATED_FROM] == str(len(value)).encode()
    assert headers[H_ERROR_KIND] == b"schema_violation" and headers[H_EXC_MESSAGE] == b"name: too long"
    assert headers["crawlstore.source"] == b"s"
    # Failing again (a replay) keeps the marker; a letter that fits is left as it is.
    again = dlq.dead_letter(
        Record("crawl.x-dlq", 0, 5, letter.key, letter.value, 1, tuple(letter.headers)),
        connector="postgres",
        stage="TASK_PUT",
        error=RecordRejected("x", "y"),
    )
    assert dict(again.headers)[H_TRUNCATED_FROM] == str(len(value)).encode() and again.value == letter.value
    small = dlq.dead_letter(
        Record("crawl.x", 0, 1, b"k", b"{}", 1, ()),
        connector="validate",
        stage="VALIDATE",
        error=RecordRejected("x", "y"),
    )
    assert small.value == b"{}" and H_TRUNCATED_FROM not in dict(small.headers)

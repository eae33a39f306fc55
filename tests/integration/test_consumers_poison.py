"""Poison among good records, for each sink: exactly the bad ones reach the DLQ, with complete
headers (a value one store cannot hold dead-letters that record there only: NUL in PostgreSQL
text, a Kafka timestamp past year 9999 in HDFS); hostile but valid values are stored verbatim;
the consumer keeps going. And the
circuit breaker stops a consumer that would dead-letter everything."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crawlstore.dlq import (
    H_ATTEMPTS,
    H_CONNECTOR,
    H_ERROR_KIND,
    H_EXC_CLASS,
    H_EXC_MESSAGE,
    H_EXC_STACKTRACE,
    H_FAILED_AT,
    H_FIRST_FAILED_AT,
    H_OFFSET,
    H_PARTITION,
    H_REPLAY_COUNT,
    H_STAGE,
    H_TOPIC,
)
from crawlstore.messages import H_SCHEMA

pytestmark = pytest.mark.integration
ALL_CONTEXT = (
    H_TOPIC,
    H_PARTITION,
    H_OFFSET,
    H_CONNECTOR,
    H_STAGE,
    H_EXC_CLASS,
    H_EXC_MESSAGE,
    H_EXC_STACKTRACE,
    H_ERROR_KIND,
    H_FIRST_FAILED_AT,
    H_FAILED_AT,
    H_ATTEMPTS,
    H_REPLAY_COUNT,
)
PRODUCT = [(H_SCHEMA, b"crawlstore.product.v1"), ("content-type", b"application/json")]
FAR_FUTURE_MS = 253_402_300_800_000 + 86_400_000  # 10000-01-02T00:00:00Z

HOSTILE = {
    "sql": "Robert'); DROP TABLE products;-- \" OR 1=1 /* */",
    "path": "../../../../etc/passwd",
    "markup": "<script>alert('x')</script>\n{{7*7}} ${jndi:ldap://x}",
    "long": "é" * 499 + "😀",  # 500 characters, the schema's limit, 4-byte UTF-8 at the end
    "controls": "tab\there\r\nnew line \u2028 separator \u202e rtl",
}


@pytest.fixture(params=["postgres", "opensearch", "hdfs"])
def store(request: pytest.FixtureRequest, make_store: Any, topic: str, key_prefix: str) -> Any:
    return make_store(request.param, topic, key_prefix)


def test_exactly_the_bad_records_reach_the_dlq_and_the_rest_is_stored_verbatim(
    kit: Any,
    topic: str,
    producer: Any,
    run_consumer: Any,
    read_topic: Any,
    key_prefix: str,
    store: Any,
) -> None:
    name = store.sink
    good = [kit.product(f"{key_prefix}good{i}", i) for i in range(40)]
    hostile = {
        f"{key_prefix}{label}": kit.product(
            f"{key_prefix}{label}", 100 + i, name=value, brand=value[:200], category=value[:200]
        )
        for i, (label, value) in enumerate(HOSTILE.items())
    }
    nul = kit.product(f"{key_prefix}nul", 200, name="NUL \u0000 inside")
    # A valid item whose Kafka timestamp is past year 9999: no HDFS day directory can name it.
    future = kit.product(f"{key_prefix}future", 300)
    future_sent = kit.Sent(
        future.key.encode(), future.model_dump_json().encode(), PRODUCT, FAR_FUTURE_MS, item=future
    )
    valid_doc = kit.product(f"{key_prefix}template", 0).model_dump(mode="json")

    def raw(
        label: str, value: bytes | None, headers: list[tuple[str, bytes]] = PRODUCT, key: str | None = None
    ) -> Any:
        return kit.Sent((key or f"{key_prefix}{label}").encode(), value, headers, None)

    def doc(**changes: Any) -> bytes:
        return json.dumps({**valid_doc, **changes}).encode()

    bad = {
        "invalid_json": raw("badjson", b'{"product_id": "x", '),
        "invalid_utf8": raw("badutf8", b'{"name": "\xff\xfe\xfa"}'),
        "schema_missing_field": raw("missing", doc(product_id=f"{key_prefix}missing", name=None)),
        "schema_negative_price": raw("negprice", doc(product_id=f"{key_prefix}negprice", price="-5.00")),
        "schema_path_id": raw("pathid", doc(product_id="../../etc/passwd"), key="../../etc/passwd"),
        "schema_sql_id": raw(
            "sqlid", doc(product_id="x'; DROP TABLE products;--"), key="x'; DROP TABLE products;--"
        ),
        "schema_huge_string": raw("huge", doc(product_id=f"{key_prefix}huge", name="A" * 300_000)),
        "schema_not_object": raw("array", b'["a", "b"]'),
        "unknown_schema": raw("noschema", doc(product_id=f"{key_prefix}noschema"), [(H_SCHEMA, b"nope.v9")]),
        "key_mismatch": raw("mismatch", doc(product_id=f"{key_prefix}other")),
        "tombstone": raw("tombstone", None),
        "deep_nesting": raw("deep", b"[" * 100_000 + b"]" * 100_000),
    }
    records: list[Any] = []
    for i, item in enumerate(good):
        records.append(item)
        if i % 3 == 0 and bad:
            records.append(bad.pop(next(iter(bad))))
    records += list(bad.values()) + list(hostile.values()) + [nul, future_sent]
    sent = producer(topic, records)
    sent_bad = [s for s in sent if s.item is None]
    expected_dlq = {(s.partition, s.offset) for s in sent_bad}
    nul_sent = next(s for s in sent if s.item is nul)
    if name == "postgres":  # PostgreSQL cannot hold NUL in text: the store refuses that one record
        expected_dlq.add((nul_sent.partition, nul_sent.offset))
    if name == "hdfs":
        expected_dlq.add((future_sent.partition, future_sent.offset))

    consumer = run_consumer(name, topics=topic, **store.env)
    stored_keys = {i.key for i in good} | set(hostile) | ({nul.key} if name != "postgres" else set())
    stored_keys |= {future.key} if name != "hdfs" else set()
    kit.eventually(
        "every good record stored", lambda: {r["key"] for r in store.records()} >= stored_keys, 120
    )
    kit.eventually(
        "every bad record dead-lettered", lambda: len(read_topic(f"{topic}-dlq")) >= len(expected_dlq)
    )
    letters = read_topic(f"{topic}-dlq")
    originals = {(r.partition, r.offset): r for r in read_topic(topic)}
    assert kit.dlq_sources(letters) == expected_dlq
    assert len(letters) == len(expected_dlq)  # each exactly once

    by_source = {(s.partition, s.offset): s for s in sent}
    for letter in letters:
        h = dict(letter.headers)
        assert all(k in h for k in ALL_CONTEXT), sorted(set(ALL_CONTEXT) - set(h))
        original = by_source[(int(h[H_PARTITION]), int(h[H_OFFSET]))]
        as_read = originals[(original.partition, original.offset)]
        assert (letter.key, letter.value, letter.timestamp) == (
            original.key,
            original.value,
            as_read.timestamp,
        )
        assert h[H_TOPIC] == topic.encode() and h[H_CONNECTOR] == name.encode()
        assert h[H_ATTEMPTS] == b"1" and h[H_REPLAY_COUNT] == b"0"
        for k, v in original.headers:  # the original headers travel along
            assert h[k] == v
        if original.item is None:
            assert h[H_STAGE] == b"VALUE_CONVERTER"
        elif original.item is future:
            assert h[H_STAGE] == b"TASK_PUT" and h[H_ERROR_KIND] == b"hdfs_timestamp"
            assert b"outside the years 1-9999" in h[H_EXC_MESSAGE]
        else:
            assert h[H_STAGE] == b"TASK_PUT" and h[H_ERROR_KIND].startswith(b"postgres_")
    kinds = {dict(r.headers)[H_ERROR_KIND].decode() for r in letters}
    assert {
        "invalid_json",
        "invalid_utf8",
        "schema_violation",
        "unknown_schema",
        "key_mismatch",
        "empty_value",
    } <= kinds
    # JSON nested past Python's recursion limit is rejected by the decoder like any other bad JSON.
    deep = [r for r in letters if r.value and r.value.startswith(b"[[[[")]
    assert [dict(r.headers)[H_ERROR_KIND] for r in deep] == [b"invalid_json"]

    stored = {r["key"]: r for r in store.records()}
    assert set(stored) == stored_keys
    for key, item in hostile.items():
        assert stored[key]["name"] == item.name
        assert stored[key]["brand"] == item.brand and stored[key]["category"] == item.category
    if name != "postgres":
        assert stored[nul.key]["name"] == nul.name
    assert consumer.alive() and consumer.health()[0] == 200
    assert consumer.stop() == 0


def test_circuit_breaker_stops_a_consumer_that_would_dead_letter_everything(
    kit: Any, topic: str, producer: Any, run_consumer: Any, read_topic: Any, key_prefix: str, pg: Any
) -> None:
    producer(topic, [kit.product(f"{key_prefix}ok{i}", i) for i in range(20)])
    consumer = run_consumer("postgres", topics=topic, dlq_max_consecutive=50, batch_max_records=100)
    kit.eventually("good records landed", lambda: len(kit.pg_rows(pg, "products", key_prefix)) == 20)
    # A "bad deploy": every record from now on has a schema the consumer does not know.
    producer(
        topic,
        [
            kit.Sent(f"{key_prefix}v2-{i}".encode(), b"{}", [(H_SCHEMA, b"crawlstore.product.v2")], None)
            for i in range(400)
        ],
    )
    code = consumer.wait_exit(timeout_s=120)
    assert code == 3
    log = consumer.log_text()
    assert "CIRCUIT BREAKER OPEN" in log and "consecutive" in log
    assert len(read_topic(f"{topic}-dlq")) <= 100  # it stopped instead of dead-lettering 400

"""The bundled crypto market example end to end: its two DAGs crawl the demo site's ticker API and
news pages into coin.raw.ticker and coin.raw.news, and the stack's own consumers, which follow the
coin.raw.* family by pattern, land every valid item in PostgreSQL, OpenSearch and under
/raw/<name>/<day>/ in HDFS; the invalid ones are dead-lettered with their reasons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
import requests
from psycopg2 import sql

from consumers.hdfs import HdfsSink
from consumers.opensearch import index_name
from consumers.postgres_schema import TableSpec
from consumers.settings import ConsumerSettings
from crawlstore.config import current
from crawlstore.dlq import failure_context
from crawlstore.settings import HdfsSettings, OpenSearchSettings, PostgresSettings
from demo.site import expected_outcomes, label_of

pytestmark = pytest.mark.e2e

# A manual run's interval is the last complete hour before its date: the manifest's window.
TICKER_DATE = datetime(2025, 6, 14, 8, tzinfo=UTC)
NEWS_DATE = datetime(2026, 11, 20, tzinfo=UTC)


def of_run(messages: list[Any], run_id: str) -> list[Any]:
    return [m for m in messages if dict(m.headers).get("crawlstore.run_id") == run_id.encode()]


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(1)


@pytest.mark.parametrize(
    ("source", "kind", "topic", "logical_date"),
    [
        ("demo_coin_ticker", "coin_quote", "coin.raw.ticker", TICKER_DATE),
        ("demo_coin_news", "news_article", "coin.raw.news", NEWS_DATE),
    ],
)
def test_a_coin_source_lands_its_valid_items_in_every_store_and_dead_letters_the_rest(
    dagbag: Any, topic_window: Any, source: str, kind: str, topic: str, logical_date: datetime
) -> None:
    family = current().family_of(topic)
    assert family is not None and family.prefix == "coin.raw."  # followed by pattern, not by name
    main, dlq = topic_window(topic), topic_window(f"{topic}-dlq")
    run = dagbag.dags[f"crawl_{source}"].test(logical_date=logical_date)
    assert run.state == "success"
    expected = expected_outcomes()[kind]

    published = of_run(main.read(), run.run_id)
    assert {m.key.decode() for m in published} == expected.valid and len(published) == len(expected.valid)
    letters = {label_of(kind, json.loads(m.value)): m for m in of_run(dlq.read(), run.run_id)}
    assert set(letters) == set(expected.invalid)
    for label, message in letters.items():
        ctx = failure_context(message.headers)
        assert (ctx.topic, ctx.connector, ctx.stage) == (topic, "validate", "VALIDATE")
        assert all(f in ctx.exception_message for f in expected.invalid[label]), ctx.exception_message

    spec = current().kinds[kind]
    table, index = (
        TableSpec.for_kind(spec).table,
        index_name(ConsumerSettings().opensearch_index_prefix, kind),
    )
    keys = sorted(expected.valid)

    def rows() -> set[str]:
        with psycopg2.connect(**PostgresSettings().connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
                    sql.Identifier(spec.key_field), sql.Identifier(table), sql.Identifier(spec.key_field)
                ),
                (keys,),
            )
            found = {r[0] for r in cur.fetchall()}
        conn.close()
        return found

    def documents() -> set[str]:
        url = f"{OpenSearchSettings().url}/{index}/_search"
        body = {"query": {"ids": {"values": keys}}, "size": len(keys), "_source": False}
        return {h["_id"] for h in requests.post(url, json=body, timeout=30).json()["hits"]["hits"]}

    hdfs = HdfsSink(HdfsSettings(), root=ConsumerSettings().hdfs_root)
    wanted = {(m.partition, m.offset) for m in published}

    def lines() -> set[tuple[int, int]]:
        found = set()
        for path in hdfs.committed_files(topic):
            assert path.startswith(f"/raw/{topic.removeprefix('coin.raw.')}/"), path
            for line in hdfs.fs.read(path).splitlines():
                lineage = json.loads(line)["kafka"]
                found.add((lineage["partition"], lineage["offset"]))
        return found & wanted

    try:
        eventually(f"{kind} rows in PostgreSQL", lambda: rows() == expected.valid)
        eventually(f"{kind} documents in OpenSearch", lambda: documents() == expected.valid)
        eventually(f"{topic} lines in HDFS", lambda: lines() == wanted)
    finally:
        hdfs.stop()

"""Schema evolution against the real PostgreSQL and OpenSearch: a kind declared in YAML gains an
optional field (table and mapping gain it, existing rows keep every value and get it from their
raw JSON, new records fill it); a change that cannot be applied safely is refused, untouched."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kafka.structs import TopicPartition

from consumers.batching import Batch, Decoded
from consumers.errors import FatalError
from consumers.opensearch import OpenSearchSink
from consumers.postgres import PostgresSink
from crawlstore.config import KindSpec, load
from crawlstore.items import derive
from crawlstore.messages import Record
from crawlstore.settings import OpenSearchSettings, PostgresSettings

pytestmark = pytest.mark.integration


def kind_spec(tmp_path: Path, name: str, fields: dict[str, Any], version: str) -> KindSpec:
    folder = tmp_path / version
    (folder / "kinds").mkdir(parents=True)
    (folder / "sources").mkdir()
    kind = {"kind": name, "key": "ref", "fields": fields}
    (folder / "kinds" / f"{name}.yaml").write_text(yaml.safe_dump(kind, sort_keys=False))
    source = {"source": f"{name}_src", "kind": name, "topic": "crawl.evolution_test", "spider": "json_api",
              "start_url": "http://x.example/", "schedule": "@daily", "extract": {"ref": "id"}}  # fmt: skip
    (folder / "sources" / f"{name}_src.yaml").write_text(yaml.safe_dump(source))
    load.cache_clear()
    return load(folder).kinds[name]


V1 = {"ref": {"type": "identifier", "required": True}, "title": {"type": "text", "required": True}}
V2 = {**V1, "city": {"type": "text"}, "tags": {"type": "list[text]"}}


def batch(
    spec: KindSpec,
    rows: list[dict[str, Any]],
    topic: str,
    first_offset: int,
    raw_extra: dict[str, Any] | None = None,
) -> Batch:
    model, out = derive(spec), Batch()
    for i, values in enumerate(rows):
        item = model.model_validate({"source": "src", "crawled_at": datetime.now(UTC), **values})
        raw = {**json.loads(item.model_dump_json()), **(raw_extra or {})}
        record = Record(topic, 0, first_offset + i, item.key.encode(), json.dumps(raw).encode(), None, ())
        out.add_item(Decoded(record, item), 0.0)
    return out


def write(sink: Any, spec_batch: Batch, topic: str) -> None:
    tp = TopicPartition(topic, 0)
    sink.open([tp], {tp: None})
    assert sink.put(spec_batch) == []
    sink.flush(spec_batch)
    sink.close([tp])


@pytest.fixture
def name(pg: Any, opensearch_url: str) -> Iterator[str]:
    kind = f"evo{uuid.uuid4().hex[:8]}"
    yield kind
    with pg.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {kind}s")  # a name the test made: no user input
        cur.execute("DELETE FROM crawlstore_schema WHERE table_name = %s", (f"{kind}s",))
        cur.execute("DELETE FROM crawlstore_schema_changes WHERE table_name = %s", (f"{kind}s",))
        cur.execute("DELETE FROM kafka_offsets WHERE consumer_group = %s", (f"test-{kind}",))
    requests.delete(f"{opensearch_url}/test-{kind}s", timeout=30)
    requests.delete(f"{opensearch_url}/_index_template/test-{kind}s", timeout=30)


def columns(pg: Any, table: str) -> dict[str, str]:
    with pg.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        return dict(cur.fetchall())


def rows(pg: Any, table: str) -> dict[str, dict[str, Any]]:
    with pg.cursor() as cur:
        cur.execute(f"SELECT * FROM {table}")  # a name the test made
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def test_postgres_adds_an_optional_field_fills_it_from_raw_and_refuses_unsafe_changes(
    tmp_path: Path, name: str, pg: Any, pg_settings: PostgresSettings
) -> None:
    table, topic, group = f"{name}s", "crawl.evolution_test", f"test-{name}"
    v1 = kind_spec(tmp_path, name, V1, "v1")
    sink = PostgresSink(pg_settings, group, kinds=[v1])
    sink.start()
    write(sink, batch(v1, [{"ref": "a", "title": "A"}], topic, 0), topic)
    # A record whose JSON already carries the coming field (published on the newer declaration).
    write(sink, batch(v1, [{"ref": "b", "title": "B"}], topic, 1, raw_extra={"city": "Paris"}), topic)
    sink.stop()
    assert "city" not in columns(pg, table)

    v2 = kind_spec(tmp_path, name, V2, "v2")
    sink = PostgresSink(pg_settings, group, kinds=[v2])
    sink.start()
    assert columns(pg, table)["city"] == "text" and columns(pg, table)["tags"] == "jsonb"
    before = rows(pg, table)
    assert (before["a"]["title"], before["a"]["city"]) == ("A", None)
    assert (before["b"]["title"], before["b"]["city"]) == ("B", "Paris")  # filled from raw
    write(sink, batch(v2, [{"ref": "c", "title": "C", "city": "Oslo", "tags": ["x", "y"]}], topic, 2), topic)
    sink.stop()
    after = rows(pg, table)
    assert (after["c"]["city"], after["c"]["tags"]) == ("Oslo", ["x", "y"])
    with pg.cursor() as cur:
        cur.execute(
            "SELECT change, detail FROM crawlstore_schema_changes WHERE table_name = %s ORDER BY id", (table,)
        )
        changes = cur.fetchall()
    assert [c for c, _ in changes] == ["created", "add_column", "add_column"]
    assert changes[1][1] == {"column": "city", "type": "text", "filled_from_raw": 1}

    layout = columns(pg, table)
    for fields, reason in (
        (
            {**V2, "title": {"type": "integer", "required": True}},
            "field title changed type from text to integer",
        ),
        (
            {**V2, "country": {"type": "text", "required": True}},
            "new field country is required but the store holds 3",
        ),
        ({**V2, "city": {"type": "text", "required": True}}, "field city became required"),
    ):
        bad = kind_spec(tmp_path, name, fields, f"bad-{uuid.uuid4().hex[:6]}")
        refusing = PostgresSink(pg_settings, group, kinds=[bad])
        with pytest.raises(FatalError, match=reason) as caught:
            refusing.start()
        assert "Nothing was changed" in str(caught.value)
        refusing.stop()
        assert columns(pg, table) == layout and rows(pg, table) == after


def test_opensearch_adds_an_optional_field_and_refuses_a_type_change(
    tmp_path: Path, name: str, opensearch_url: str
) -> None:
    index, topic = f"test-{name}s", "crawl.evolution_test"
    settings = OpenSearchSettings(url=opensearch_url)
    v1 = kind_spec(tmp_path, name, V1, "v1")
    sink = OpenSearchSink(settings, "test-", kinds=[v1])
    sink.start()
    write(sink, batch(v1, [{"ref": "a", "title": "A"}], topic, 0), topic)
    sink.stop()

    def mapping() -> dict[str, Any]:
        found = requests.get(f"{opensearch_url}/{index}/_mapping", timeout=30).json()
        return dict(found[index]["mappings"])

    assert "city" not in mapping()["properties"]
    v2 = kind_spec(tmp_path, name, V2, "v2")
    sink = OpenSearchSink(settings, "test-", kinds=[v2])
    sink.start()
    assert mapping()["properties"]["city"] == {"type": "keyword", "ignore_above": 1024}
    write(sink, batch(v2, [{"ref": "c", "title": "C", "city": "Oslo"}], topic, 1), topic)
    sink.stop()
    requests.post(f"{opensearch_url}/{index}/_refresh", timeout=30)
    docs = requests.get(f"{opensearch_url}/{index}/_search", timeout=30).json()["hits"]["hits"]
    assert {d["_id"]: d["_source"].get("city") for d in docs} == {"a": None, "c": "Oslo"}

    retyped = kind_spec(tmp_path, name, {**V2, "title": {"type": "integer", "required": True}}, "v3")
    with pytest.raises(FatalError, match=r"index test-\w+: field title changed type from text to integer"):
        OpenSearchSink(settings, "test-", kinds=[retyped]).start()
    assert mapping()["properties"]["title"]["type"] == "keyword"

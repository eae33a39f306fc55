"""The declared configuration: the bundled files load, and every mistake is refused with its file,
its key and what is allowed, never half loaded. Each case writes real YAML into a temp folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlstore.config import ConfigError, load
from crawlstore.config.loader import DEFAULT_DIR
from crawlstore.items import derive, item_type

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

KIND = {
    "kind": "job",
    "key": "job_id",
    "fields": {
        "job_id": {"type": "identifier", "required": True},
        "title": {"type": "text", "required": True, "max_length": 300, "search": True},
        "salary": {"type": "decimal", "min": 0, "digits": 12, "places": 2},
        "posted_at": {"type": "timestamp", "required": True},
        "tags": {"type": "list[text]", "max_items": 20},
        "level": {"type": "enum", "values": ["junior", "senior"]},
    },
}
SOURCE = {
    "source": "acme_jobs",
    "kind": "job",
    "topic": "crawl.jobs",
    "spider": "catalogue",
    "start_url": "https://jobs.example/list?page=1",
    "schedule": "@daily",
    "extract": {"item_links": "a.job::attr(href)", "job_id": "td.id::text", "title": "h1::text"},
}


def write(folder: Path, kinds: dict[str, Any], sources: dict[str, Any]) -> Path:
    for sub, files in (("kinds", kinds), ("sources", sources)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            text = (
                data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
            )
            (folder / sub / name).write_text(text, encoding="utf-8")
    return folder


def problems(folder: Path) -> list[str]:
    load.cache_clear()
    with pytest.raises(ConfigError) as caught:
        load(folder)
    return caught.value.problems


def test_the_bundled_configuration_loads_and_the_check_command_says_so() -> None:
    config = load(DEFAULT_DIR)
    # What the files declare, read here without the loader.
    sources = [
        yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(DEFAULT_DIR.glob("sources/*.yaml"))
    ]
    assert set(config.kinds) == {p.stem for p in DEFAULT_DIR.glob("kinds/*.yaml")}
    assert {"product", "reading", "coin_quote", "news_article"} <= set(config.kinds)
    assert config.topics == tuple(sorted({s["topic"] for s in sources}))
    result = subprocess.run(
        [sys.executable, "-m", "crawlstore.config", "check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    for s in sources:
        assert f"source {s['source']}: {s['spider']} -> {s['topic']} ({s['kind']})" in result.stdout


def test_a_new_kind_and_source_load_and_derive_a_validation_model(tmp_path: Path) -> None:
    load.cache_clear()
    config = load(write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE}))
    model = derive(config.kinds["job"])
    assert list(model.model_fields) == [
        "source",
        "crawled_at",
        "job_id",
        "title",
        "salary",
        "posted_at",
        "tags",
        "level",
    ]
    item = model.model_validate(
        {"source": "acme_jobs", "crawled_at": "2026-01-01T00:00:00Z", "job_id": "J-1", "title": " Dev ",
         "salary": "1000.50", "posted_at": "2026-01-01T00:00:00Z", "tags": ["a"], "level": "senior"}
    )  # fmt: skip
    assert (item.key, item.title, model.schema_version) == ("J-1", "Dev", "crawlstore.job.v1")
    with pytest.raises(ValueError, match="level"):
        model.model_validate({**item.model_dump(), "level": "lead"})


def test_the_check_command_prints_every_problem_and_fails(tmp_path: Path) -> None:
    write(tmp_path, {"job.yaml": {**KIND, "colour": "red"}}, {"acme_jobs.yaml": {**SOURCE, "extract": {}}})
    result = subprocess.run(
        [sys.executable, "-m", "crawlstore.config", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "kinds/job.yaml: (top level): unknown key(s) colour; allowed: kind, version" in result.stderr
    # The kind it names failed to load: the source is not blamed for naming it, nor checked against it.
    assert "sources/acme_jobs.yaml" not in result.stderr


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            {"fields": {**KIND["fields"], "title": {"type": "txt"}}},
            "kinds/job.yaml: fields.title.type: Input should be 'text'",
        ),
        (
            {"fields": {**KIND["fields"], "title": {"type": "text", "min": 3}}},
            "min do(es) not apply to type text (its constraints: max_length, min_length, pattern)",
        ),
        ({"fields": {**KIND["fields"], "level": {"type": "enum"}}}, "an enum needs `values`"),
        (
            {"fields": {**KIND["fields"], "title": {"type": "text", "pattern": "(["}}},
            "is not a regular expression",
        ),
        (
            {"fields": {**KIND["fields"], "salary": {"type": "decimal", "min": 5, "max": 1}}},
            "min is above max",
        ),
        ({"fields": {**KIND["fields"], "Title": {"type": "text"}}}, "field 'Title' is not a safe name"),
        ({"fields": {**KIND["fields"], "raw": {"type": "json"}}}, "field 'raw' is reserved"),
        (
            {"fields": {**KIND["fields"], "select": {"type": "text"}, "x" * 70: {"type": "text"}}},
            "is not a safe name",
        ),
        ({"fields": {**KIND["fields"], "name_ü": {"type": "text"}}}, "field 'name_ü' is not a safe name"),
        ({"key": "title_id"}, "key 'title_id' is not one of the fields"),
        ({"key": "salary"}, "key 'salary' must be a required identifier or text field"),
        (
            {"key": {"field": "job_id", "template": "{company}:{posted_at}"}},
            "{company} is not another required field",
        ),
        ({"checks": ["salary < title"]}, "'title' is not a numeric or time field"),
        ({"checks": ["salary; DROP TABLE x"]}, "is not `<field> <op> <field>`"),
        ({"version": 0}, "version: Input should be greater than or equal to 1"),
        ({"search": True}, "unknown key(s) search"),
    ],
)
def test_a_wrong_kind_is_refused_with_its_file_and_key(
    tmp_path: Path, kind: dict[str, Any], expected: str
) -> None:
    found = problems(write(tmp_path, {"job.yaml": {**KIND, **kind}}, {"acme_jobs.yaml": SOURCE}))
    assert any(expected in p for p in found), found
    assert all(p.startswith("kinds/job.yaml: ") for p in found), found  # the source is not blamed


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"kind": "article"}, "kind: 'article' is not a declared kind (job;"),
        ({"topic": "crawl.jobs-dlq"}, "topic: 'crawl.jobs-dlq' must be lower-case dotted words"),
        ({"topic": "../x"}, "topic: '../x' must be lower-case dotted words"),
        ({"topic": "Crawl.Jobs"}, "topic: 'Crawl.Jobs' must be lower-case dotted words"),
        ({"spider": "selenium"}, "spider: Input should be 'catalogue' or 'json_api'"),
        (
            {"extract": {"item_links": "a::attr(href)", "salery": "td::text"}},
            "extract.salery: neither a field of kind job",
        ),
        ({"extract": {"title": "h1::text"}}, "extract.item_links: a catalogue source needs it"),
        (
            {"politeness": {"download_delay": -1}},
            "politeness.download_delay: Input should be greater than or equal to 0",
        ),
        (
            {"politeness": {"delay": 1}},
            "unknown key(s) delay; allowed: download_delay, concurrent_per_domain, autothrottle",
        ),
        ({"source": "Acme Jobs"}, "source 'Acme Jobs' is not a safe name"),
        (
            {"source": "other"},
            "'other' is declared in a file named 'acme_jobs.yaml'; name the file other.yaml",
        ),
        ({"start_url": ""}, "start_url: String should have at least 1 character"),
        (
            {"extract": {"item_links": "a::attr(href)", "title": {"path": "data.title"}}},
            "extract.title: a catalogue source finds values by css, xpath, jsonld, script",
        ),
        (
            {"extract": {"item_links": {"css": "a::attr(href)"}}},
            "extract.item_links: a navigation key takes a plain selector",
        ),
        (
            {"extract": {"item_links": "a::attr(href)", "title": {"css": "h1", "xpath": "//h1"}}},
            "extract: title: give exactly one of css, xpath, jsonld, script, path (given: css, xpath)",
        ),
    ],
)
def test_a_wrong_source_is_refused_with_its_file_and_key(
    tmp_path: Path, source: dict[str, Any], expected: str
) -> None:
    found = problems(write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": {**SOURCE, **source}}))
    assert any(p.startswith("sources/acme_jobs.yaml: ") and expected in p for p in found), found


def test_broken_files_and_folders_are_refused_whole(tmp_path: Path) -> None:
    found = problems(
        write(
            tmp_path,
            {"job.yaml": "kind: job\nfields: [\n", "notes.txt": "x", "list.yaml": "- a\n"},
            {
                "acme_jobs.yaml": SOURCE,
                "b.yaml": {**SOURCE, "source": "b", "kind": "job", "topic": "crawl.jobs_b"},
            },
        )
    )
    assert any(p.startswith("kinds/job.yaml: not valid YAML: line 3, column 1") for p in found), found
    assert "kinds/notes.txt: not a .yaml file (only <kind>.yaml files belong here)" in found
    assert "kinds/list.yaml: the file must hold a mapping of keys, not list" in found
    # Their kind failed to load: the sources are not blamed for naming it.
    assert not any(p.startswith("sources/") for p in found), found
    assert problems(tmp_path / "missing") == [
        f"{tmp_path / 'missing'}: not a folder (set CRAWLSTORE_CONFIG_DIR)"
    ]


def test_one_topic_carries_one_kind(tmp_path: Path) -> None:
    other = {**KIND, "kind": "gig"}
    found = problems(
        write(tmp_path, {"job.yaml": KIND, "gig.yaml": other},
              {"acme_jobs.yaml": SOURCE, "gigs.yaml": {**SOURCE, "source": "gigs", "kind": "gig"}})
    )  # fmt: skip
    assert any("topic: 'crawl.jobs' already carries kind" in p for p in found), found


def test_a_bad_configuration_is_the_dag_files_import_error(tmp_path: Path) -> None:
    """What Airflow shows: the DAG file fails to import with every problem in the message."""
    config = write(tmp_path / "config", {"job.yaml": {**KIND, "key": "nope"}}, {"acme_jobs.yaml": SOURCE})
    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "airflow" / "dags", dags, ignore=shutil.ignore_patterns("config", "__pycache__"))
    script = (
        "import os, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(dags)!r})\n"
        "print(repr(bag.import_errors))\n"
    )
    env = {**os.environ, "CRAWLSTORE_CONFIG_DIR": str(config)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert "kinds/job.yaml: (top level): key 'nope' is not one of the fields" in result.stdout, (
        result.stdout + result.stderr
    )
    assert "crawl_sources.py" in result.stdout


def test_the_derived_models_of_the_bundled_kinds_validate_as_declared() -> None:
    product = item_type("product")
    assert product.key_field == "product_id" and product.schema_version == "crawlstore.product.v1"
    base = {"source": "s", "crawled_at": "2026-01-01T00:00:00Z", "product_id": "P1", "name": "n",
            "price": "10.00", "currency": "EUR", "url": "https://x.example/p"}  # fmt: skip
    assert product.model_validate(base).key == "P1"
    for bad, kind in (
        ({"sale_price": "11.00"}, "value_error"),  # the check sale_price <= price
        ({"price": "9999999999"}, "less_than_equal"),
        ({"currency": "eur"}, "string_pattern_mismatch"),
        ({"product_id": "../etc"}, "string_pattern_mismatch"),
        ({"rating": "nan"}, "finite_number"),
    ):
        with pytest.raises(ValueError) as caught:
            product.model_validate({**base, **bad})
        assert kind in str(caught.value)


def test_a_kinds_model_table_and_mapping_are_derived_from_its_declaration(tmp_path: Path) -> None:
    """One declaration, four derived layouts: no hand-kept copy anywhere to drift."""
    import pyarrow as pa

    from consumers.opensearch import mapping_for
    from consumers.parquet import arrow_schema
    from consumers.postgres_schema import TableSpec, column_type, create_table

    load.cache_clear()
    kind = load(write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE})).kinds["job"]
    model, table, mapping = derive(kind), TableSpec.for_kind(kind), mapping_for(kind)
    declared = list(kind.fields)
    assert list(model.model_fields) == ["source", "crawled_at", *declared]
    assert (table.table, table.key, table.columns) == ("jobs", "job_id", (*declared, "crawled_at"))
    assert [column_type(f) for f in kind.fields.values()] == [
        "text", "text", "numeric(12, 2)", "timestamptz", "jsonb", "text",
    ]  # fmt: skip
    ddl = repr(create_table(kind))
    assert all(f"Identifier('{name}')" in ddl for name in declared) and "PRIMARY KEY" in ddl
    properties = mapping["properties"]
    assert set(properties) == {*declared, "source", "crawled_at", "kafka"} and mapping["dynamic"] == "strict"
    assert properties["title"]["type"] == "text" and properties["job_id"] == {"type": "keyword"}
    assert properties["salary"] == {"type": "scaled_float", "scaling_factor": 100}
    assert properties["posted_at"] == {"type": "date"} and properties["tags"]["type"] == "keyword"
    assert mapping["_meta"]["crawlstore"]["fields"]["salary"] == {"type": "decimal", "required": False}
    schema = arrow_schema(kind)  # HDFS Parquet files
    assert schema.names == [*declared, "source", "crawled_at", "kafka"]
    assert [schema.field(n).type for n in declared] == [
        pa.string(), pa.string(), pa.decimal128(12, 2),
        pa.timestamp("us", tz="UTC"), pa.list_(pa.string()), pa.string(),
    ]  # fmt: skip


def test_changes_a_store_cannot_apply_safely_are_named() -> None:
    from crawlstore.config.evolution import unsafe_changes

    before = {"key": "job_id", "fields": {"job_id": {"type": "identifier", "required": True},
                                          "title": {"type": "text", "required": False}}}  # fmt: skip
    added = {"key": "job_id", "fields": {**before["fields"], "city": {"type": "text", "required": False}}}
    assert unsafe_changes(before, added, rows=10) == []
    assert unsafe_changes(before, {**before, "key": "title"}, rows=0) == [
        "the key changed from job_id to title"
    ]
    retyped = {
        "key": "job_id",
        "fields": {**before["fields"], "title": {"type": "integer", "required": False}},
    }
    assert unsafe_changes(before, retyped, 0) == ["field title changed type from text to integer"]
    required = {"key": "job_id", "fields": {**before["fields"], "city": {"type": "text", "required": True}}}
    assert unsafe_changes(before, required, rows=0) == []  # nothing to fill: fine on an empty store
    assert unsafe_changes(before, required, rows=3) == [
        "new field city is required but the store holds 3 record(s)"
    ]
    removed = {"key": "job_id", "fields": {"job_id": before["fields"]["job_id"]}}
    assert unsafe_changes(before, removed, 0) == [
        "field title was removed (its column and values stay; declare it again)"
    ]


def test_a_derived_field_is_filled_from_its_rule() -> None:
    reading = item_type("reading")
    base = {
        "source": "s",
        "crawled_at": "2026-01-01T00:00:00Z",
        "reading_id": "D1:20260101T000000",
        "device_id": "D1",
        "is_fail": False,
        "measured_at": "2026-01-01T00:00:00Z",
        "sensor1": 20.5,
    }
    assert reading.model_validate(base).status == "OK"
    assert reading.model_validate({**base, "motor2": 1500.5}).status == "CRITICAL"
    assert reading.model_validate({**base, "sensor3": 90}).status == "OK"  # above 90, not at it
    assert reading.model_validate({**base, "is_fail": True}).status == "CRITICAL"
    # What the stores read back is what was published: the value is derived again, the same.
    critical = reading.model_validate({**base, "sensor1": 95})
    assert reading.model_validate_json(critical.model_dump_json()).status == "CRITICAL"
    assert reading.model_validate({**base, "status": "CRITICAL"}).status == "OK"  # never taken from input


@pytest.mark.parametrize(
    ("derived", "expected"),
    [
        ({"nope": {"when_any": ["salary > 1"], "then": "x"}}, "derived 'nope' must be an optional field"),
        ({"job_id": {"when_any": ["salary > 1"], "then": "x"}}, "derived 'job_id' must be an optional field"),
        ({"level": {"when_any": ["salary >> 1"], "then": "senior"}}, "is not `<field> <op> <value>`"),
        (
            {"level": {"when_any": ["wage > 1"], "then": "senior"}},
            "'wage' is not a declared, non-derived field",
        ),
        (
            {"level": {"when_any": ["salary > 1"], "then": "boss"}},
            "'boss' is not one of its values (junior, senior)",
        ),
        ({"level": {"when_any": ["title matches '(['"], "then": "senior"}}, "is not a regular expression"),
        ({"level": {"when_any": [], "then": "senior"}}, "when_any: Tuple should have at least 1 item"),
        ({"level": {"when_any": ["salary > 1"], "then": "senior", "unless": 1}}, "unknown key(s) unless"),
    ],
)
def test_a_wrong_derived_rule_is_refused(tmp_path: Path, derived: dict[str, Any], expected: str) -> None:
    found = problems(write(tmp_path, {"job.yaml": {**KIND, "derived": derived}}, {"acme_jobs.yaml": SOURCE}))
    assert any(expected in p for p in found), found


def test_a_source_does_not_extract_a_derived_field(tmp_path: Path) -> None:
    kind = {
        **KIND,
        "derived": {
            "level": {"when_any": ["title matches '(?i)senior'"], "then": "senior", "else": "junior"}
        },
    }
    source = {**SOURCE, "extract": {**SOURCE["extract"], "level": "td.level::text"}}
    found = problems(write(tmp_path, {"job.yaml": kind}, {"acme_jobs.yaml": source}))
    assert any("extract.level: neither a field of kind job" in p for p in found), found


def write_family(folder: Path, name: str, data: dict[str, Any]) -> None:
    (folder / "topics").mkdir(parents=True, exist_ok=True)
    (folder / "topics" / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def test_a_topic_family_sets_the_hdfs_layout_and_makes_the_consumers_follow_its_prefix(
    tmp_path: Path,
) -> None:
    raw = {**SOURCE, "source": "acme_raw", "topic": "jobs.raw.acme"}
    folder = write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE, "acme_raw.yaml": raw})
    write_family(
        folder, "jobs", {"family": "jobs", "topics": "jobs.raw.*", "hdfs": {"path": "/raw/{name}/{date}"}}
    )
    write_family(folder, "acme", {"family": "acme", "topics": "jobs.raw.acme", "hdfs": {"format": "parquet"}})
    load.cache_clear()
    config = load(folder)
    topics, pattern = config.subscription()
    assert topics == () and pattern is not None
    followed = ["crawl.jobs", "jobs.raw.acme", "jobs.raw.other", "jobs.raw.a.b"]
    assert all(re.fullmatch(pattern, t) for t in followed)
    assert not any(
        re.fullmatch(pattern, t) for t in ["jobs.raw.acme-dlq", "jobs.raw.", "crawl.jobsx", "x.crawl.jobs"]
    )
    # The most specific family wins; a topic no family covers keeps the default layout.
    assert config.hdfs_layout("jobs.raw.other")[0].path == "/raw/{name}/{date}"
    assert config.hdfs_layout("jobs.raw.other")[1] == "other"
    assert config.hdfs_layout("jobs.raw.acme")[0].format == "parquet"
    assert config.hdfs_layout("crawl.jobs")[0].model_dump() == {
        "path": "{root}/{topic}/dt={date}",
        "format": "jsonl",
    }
    load.cache_clear()
    assert load(write(tmp_path / "plain", {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE})).subscription() == (
        ("crawl.jobs",),
        None,
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"family": "x", "topics": "Coin.*"}, "must be a topic"),
        ({"family": "x", "topics": "coin.*.raw"}, "must be a topic"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "raw/{name}/{date}"}}, "absolute"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/raw/../{name}/{date}"}}, "segment '..'"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/raw/{date}/{name}"}}, "last segment"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/raw/{kind}/{date}"}}, "unknown placeholder"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/raw/{date}"}}, "name the topic"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/r/{root}/{name}/{date}"}}, "{root} can only"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/r a/{name}/{date}"}}, "may hold only"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/räw/{name}/{date}"}}, "may hold only"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"path": "/raw/{name}/{date}'; --"}}, "may hold only"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"format": "csv"}}, "hdfs.format"),
        ({"family": "x", "topics": "coin.*", "hdfs": {"layout": "/x"}}, "unknown key(s) layout"),
        ({"family": "other", "topics": "coin.*"}, "declared in a file named 'x.yaml'"),
        (
            {"family": "x", "topics": "coin.*", "hdfs": {"path": "/lake/env=prod/{name}/{date}"}},
            "= only in the day",
        ),
        (
            {"family": "x", "topics": "coin.*", "hdfs": {"path": "/{topic}-{date}"}},
            "needs a directory above it",
        ),
        ({"family": "x", "topics": "crawl.job"}, "no source publishes to 'crawl.job'"),
    ],
)
def test_a_wrong_topic_family_is_refused_with_its_file_and_key(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    folder = write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE})
    write_family(folder, "x", data)
    found = problems(folder)
    assert len(found) == 1 and found[0].startswith("topics/x.yaml: ") and expected in found[0], found


def test_two_families_cannot_declare_the_same_topics(tmp_path: Path) -> None:
    folder = write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE})
    write_family(folder, "a", {"family": "a", "topics": "coin.*"})
    write_family(folder, "b", {"family": "b", "topics": "coin.*"})
    assert problems(folder) == ["topics/b.yaml: topics: 'coin.*' is declared by a.yaml too"]


POLL_SOURCE = {
    **SOURCE,
    "spider": "json_api",
    "start_url": "https://api.example/jobs?since={data_interval_start}&until={data_interval_end}",
    "schedule": "@continuous",
    "poll": {"every_s": 10},
    "extract": {"job_id": "id", "title": "title"},
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"spider": "catalogue", "extract": SOURCE["extract"]},
            "a json_api source with schedule @continuous",
        ),
        ({"schedule": "@hourly"}, "a json_api source with schedule @continuous"),
        ({"start_url": "https://api.example/jobs"}, "takes the window as {data_interval_start}"),
        ({"start_url": "https://api.example/jobs?at={logical_date}"}, "(it has: logical_date)"),
        ({"poll": {"every_s": 60, "run_s": 30}}, "run_s (30) is shorter than every_s (60)"),
        ({"poll": {"every_s": 0.1}}, "poll.every_s"),
        ({"poll": {"every_s": 10, "lag_s": -1}}, "poll.lag_s"),
    ],
)
def test_a_wrong_polling_source_is_refused(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    found = problems(write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": {**POLL_SOURCE, **change}}))
    assert len(found) == 1 and found[0].startswith("sources/acme_jobs.yaml: ") and expected in found[0], found


def test_a_polling_source_loads(tmp_path: Path) -> None:
    load.cache_clear()
    source = load(write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": POLL_SOURCE})).sources["acme_jobs"]
    assert source.poll is not None
    assert (source.poll.every_s, source.poll.run_s, source.poll.window_s, source.poll.lag_s) == (
        10,
        600,
        3600,
        0,
    )


def test_a_family_never_covers_a_dead_letter_twin(tmp_path: Path) -> None:
    folder = write(tmp_path, {"job.yaml": KIND}, {"acme_jobs.yaml": SOURCE})
    write_family(folder, "jobs", {"family": "jobs", "topics": "crawl.*", "hdfs": {"format": "parquet"}})
    load.cache_clear()
    config = load(folder)
    assert config.family_of("crawl.jobs") is not None
    assert config.family_of("crawl.jobs-dlq") is None and config.family_of("crawl.jobs-dlq-parking") is None
    assert config.hdfs_layout("crawl.jobs-dlq")[0].format == "jsonl"  # replays land as docs/replay.md says

# ruff: noqa: E501
"""Bring your own data: a kind and a source added only as YAML files (in a copy of the bundled
configuration) get their DAG, topics, table, index and HDFS files; a crawl of a local site lands
typed rows, documents and lines, and its invalid item is dead-lettered with the reason."""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from crawlstore.config.loader import DEFAULT_DIR
from crawlstore.dlq import failure_context

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
JOBS = [  # (id, title, salary as the page shows it, city); J-3's salary is not a number
    ("J-1", "Data engineer", "€52,000.00", "Oslo"),
    ("J-2", 'Senior "SQL" analyst\'; DROP TABLE x;--', "€61,500.50", "Zürich"),
    ("J-3", "Crawler whisperer", "ask us", "Lyon"),
]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A tiny job board on 127.0.0.1: one listing page, one page per job."""
    root = tmp_path / "site"
    (root / "jobs").mkdir(parents=True)
    links = "".join(f'<li><a class="job" href="/jobs/{j}.html">{j}</a></li>' for j, *_ in JOBS)
    (root / "list.html").write_text(f"<html><body><ul>{links}</ul></body></html>", encoding="utf-8")
    for job_id, title, salary, city in JOBS:
        page = (
            f"<html><body><h1>{title.replace('<', '&lt;')}</h1><table><tr><td class='id'>{job_id}</td></tr></table>"
            f"<span class='salary'>{salary}</span><span class='city'>{city}</span>"
            "<time datetime='2026-11-30T09:00:00Z'>30 Nov</time></body></html>"
        )
        (root / "jobs" / f"{job_id}.html").write_text(page, encoding="utf-8")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def job_kind(tmp_path: Path, site: str) -> dict[str, Any]:
    """A copy of the bundled configuration plus kinds/<kind>.yaml and sources/<kind>_board.yaml."""
    suffix = "".join(random.choices(string.ascii_lowercase, k=8))
    kind, source, topic = f"job_{suffix}", f"job_{suffix}_board", f"crawl.jobs_{suffix}"
    config = tmp_path / "config"
    shutil.copytree(DEFAULT_DIR, config)
    declared = {
        "kind": kind,
        "key": "job_id",
        "fields": {
            "job_id": {"type": "identifier", "required": True},
            "title": {"type": "text", "required": True, "max_length": 300, "search": True},
            "salary": {"type": "decimal", "min": 0, "digits": 12, "places": 2},
            "city": {"type": "text", "max_length": 100},
            "posted_at": {"type": "timestamp", "required": True},
        },
    }
    board = {
        "source": source,
        "kind": kind,
        "topic": topic,
        "spider": "catalogue",
        "description": "a job board on this machine",
        "start_url": f"{site}/list.html",
        "schedule": "@daily",
        "extract": {
            "item_links": "a.job::attr(href)",
            "job_id": "td.id::text",
            "title": "h1::text",
            "salary": ".salary::text",
            "city": ".city::text",
            "posted_at": "time::attr(datetime)",
        },
        "politeness": {"download_delay": 0, "autothrottle": False},
    }
    (config / "kinds" / f"{kind}.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))
    (config / "sources" / f"{source}.yaml").write_text(yaml.safe_dump(board, sort_keys=False))
    return {"config": config, "kind": kind, "source": source, "topic": topic}


@pytest.fixture
def cleanup(
    job_kind: dict[str, Any], stack_env: dict[str, str], pg: Any, opensearch_url: str, webhdfs: Any
) -> Iterator[None]:
    yield
    kind, topic = job_kind["kind"], job_kind["topic"]
    with pg.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {kind}s")  # a name this test made
        cur.execute("DELETE FROM crawlstore_schema WHERE table_name = %s", (f"{kind}s",))
        cur.execute("DELETE FROM crawlstore_schema_changes WHERE table_name = %s", (f"{kind}s",))
    requests.delete(f"{opensearch_url}/test-{kind}s", timeout=30)
    requests.delete(f"{opensearch_url}/_index_template/test-{kind}s", timeout=30)
    admin = KafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
    admin.delete_topics([topic, f"{topic}-dlq", f"{topic}-dlq-parking"])
    admin.close()


def run_python(script: str, env: dict[str, str], timeout_s: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def read_all(servers: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    end = consumer.end_offsets(tps)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Any] = []
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=1000).values():
            out.extend(batch)
    consumer.close()
    return out


def test_a_kind_and_a_source_declared_in_yaml_only_land_in_every_store(
    job_kind: dict[str, Any], cleanup: None, stack_env: dict[str, str], run_consumer: Any,
    kit: Any, pg: Any, opensearch_url: str, webhdfs: Any, tmp_path: Path,
) -> None:  # fmt: skip
    kind, source, topic, config = job_kind["kind"], job_kind["source"], job_kind["topic"], job_kind["config"]
    env = {**stack_env, "CRAWLSTORE_CONFIG_DIR": str(config)}
    # The check command accepts it; init creates its topic, DLQ and parking topic.
    assert f"source {source}: catalogue -> {topic} ({kind})" in run_python(
        "from crawlstore.config.__main__ import main; raise SystemExit(main(['check']))", env
    )
    run_python("from crawlstore.init import main; raise SystemExit(main())", env)

    hdfs_root = f"/test/{kind}/topics"
    consumers = [
        run_consumer("postgres", topics=topic, config_dir=config),
        run_consumer("opensearch", topics=topic, config_dir=config, opensearch_index_prefix="test-"),
        run_consumer("hdfs", topics=topic, config_dir=config, hdfs_root=hdfs_root),
    ]
    for consumer in consumers:
        consumer.wait_healthy()

    # Its DAG appears and runs through Airflow: crawl -> validate -> publish_kafka.
    out = run_python(
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from airflow.api.common.delete_dag import delete_dag\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(ROOT / 'airflow' / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"dag = bag.dags['crawl_{source}']\n"
        "print('tasks', [t.task_id for t in dag.topological_sort()])\n"
        "run = dag.test(logical_date=datetime(2026, 11, 30, tzinfo=UTC))\n"
        "print('state', run.state)\n"
        f"delete_dag('crawl_{source}')\n",
        env,
    )
    assert "tasks ['crawl', 'validate', 'publish_kafka']" in out and "state success" in out, out[-3000:]

    servers = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    published = read_all(servers, topic)
    assert sorted(m.key.decode() for m in published) == ["J-1", "J-2"]
    assert {dict(m.headers)["crawlstore.schema"] for m in published} == {f"crawlstore.{kind}.v1".encode()}
    letters = read_all(servers, f"{topic}-dlq")
    assert len(letters) == 1, [
        (
            m.key,
            failure_context(m.headers).connector,
            failure_context(m.headers).error_kind,
            failure_context(m.headers).exception_message[:300],
        )
        for m in letters
    ]
    letter, context = letters[0], failure_context(letters[0].headers)
    assert (letter.key, context.connector, context.error_kind) == (
        b"J-3",
        "validate",
        "salary:decimal_parsing",
    )

    def table_rows() -> dict[str, dict[str, Any]]:
        with pg.cursor() as cur:
            cur.execute(f"SELECT * FROM {kind}s")  # a name this test made
            cols = [c.name for c in cur.description]
            return {row[0]: dict(zip(cols, row, strict=True)) for row in cur.fetchall()}

    kit.eventually("2 rows in PostgreSQL", lambda: len(table_rows()) == 2)
    rows = table_rows()
    assert (rows["J-1"]["salary"], rows["J-1"]["city"]) == (Decimal("52000.00"), "Oslo")
    assert rows["J-2"]["title"] == JOBS[1][1] and rows["J-2"]["city"] == "Zürich"
    assert rows["J-1"]["posted_at"] == datetime(2026, 11, 30, 9, tzinfo=UTC)
    index = f"test-{kind}s"
    kit.eventually("2 documents in OpenSearch", lambda: len(kit.os_search(opensearch_url, index)) == 2)
    docs = kit.os_search(opensearch_url, index)
    assert (
        docs["J-2"]["_source"]["salary"] == "61500.50" and docs["J-2"]["_source"]["kafka"]["topic"] == topic
    )
    hits = requests.get(
        f"{opensearch_url}/{index}/_search", params={"q": "title:engineer"}, timeout=30
    ).json()
    assert [h["_id"] for h in hits["hits"]["hits"]] == ["J-1"]  # the title is full-text searched
    for consumer in consumers:
        assert consumer.stop() == 0  # HDFS flushes its files on a clean stop
    lines = kit.jsonl_lines(webhdfs.files(hdfs_root, topic))
    assert sorted(line["job_id"] for line in lines) == ["J-1", "J-2"]
    webhdfs.delete(f"/test/{kind}")
    assert json.loads(published[0].value)["posted_at"].startswith("2026-11-30T09:00:00")

"""The Pipeline page inside Airflow's UI (/plugin/pipeline), in a real browser: headless Debian
chromium driven by Playwright, logged in through Airflow's own login form.

What the page shows is checked against what Kafka, the consumers and PostgreSQL say at the same
time; its Replay action is followed through the dlq_replay runs it starts to the rows they land.
Screenshots go to .stack/logs/screenshots/ (pipeline-*.png).
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from crawlstore.connectors import consumer_group
from crawlstore.dlq import failure_context
from crawlstore.topics import dlq_topic, pipeline_topics
from demo.airflow_api import AirflowApi

pytestmark = pytest.mark.integration

TOPIC = "crawl.products"
DLQ = dlq_topic(TOPIC)
HOSTILE = '<img src=x onerror="window.__pwned=1"> refused by a check constraint'


@pytest.fixture(scope="module")
def airflow(stack_env: dict[str, str]) -> str:
    return stack_env["AIRFLOW_API_URL"]


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str], airflow: str) -> AirflowApi:
    client = AirflowApi(
        airflow, stack_env.get("AIRFLOW_ADMIN_USER", "admin"), stack_env["AIRFLOW_ADMIN_PASSWORD"]
    )
    client.wait_for_dags(["dlq_replay"])
    return client


@pytest.fixture
def ui(browser: Any, airflow: str, stack_env: dict[str, str]) -> Iterator[Any]:
    """A tab logged in through Airflow's form, on the Pipeline page inside Airflow's UI."""
    page = browser.new_page(viewport={"width": 1500, "height": 1900})  # the whole page in shots
    page.goto(f"{airflow}/plugin/pipeline")
    page.fill("input[name=username]", stack_env.get("AIRFLOW_ADMIN_USER", "admin"))
    page.fill("input[name=password]", stack_env["AIRFLOW_ADMIN_PASSWORD"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/plugin/pipeline", timeout=60_000)
    page.frame_locator("iframe").locator("#topics tbody tr").first.wait_for(timeout=60_000)
    yield page
    page.close()


def frame(page: Any) -> Any:
    return page.frame_locator("iframe")


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def eventually(what: str, probe: Any, timeout_s: float = 90.0) -> Any:
    """Retries `probe` (-> (ok, what it saw)) until ok; an element missing meanwhile is a retry."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            ok, last = probe()
        except Exception as exc:  # Playwright's TimeoutError while the page re-renders, say
            ok, last = False, repr(exc)
        if ok:
            return last
        time.sleep(1.0)
    raise AssertionError(f"{what}: not after {timeout_s:.0f}s; last seen {last}")


# ------------------------------------------------------------------------------- what Kafka says


def kafka_lag(servers: str, sink: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        end, begin = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        group = consumer_group(sink)
        committed = admin.list_group_offsets([group]).get(group, {})
        return sum(end[tp] - (committed[tp].offset if tp in committed else begin[tp]) for tp in tps)
    finally:
        consumer.close()
        admin.close()


def kafka_dead_letters(servers: str, topic: str) -> tuple[int, Counter[tuple[str, str]]]:
    """The DLQ's record count, and its records by (sink, error kind), read from Kafka here."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        end, begin = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        counts: Counter[tuple[str, str]] = Counter()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                for m in batch:
                    ctx = failure_context(m.headers)
                    counts[(ctx.connector or "?", ctx.error_kind or ctx.exception_class or "?")] += 1
        return sum(end[tp] - begin[tp] for tp in tps), counts
    finally:
        consumer.close()


def kafka_end(servers: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        return int(consumer.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)])
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------ the tests


def test_the_page_and_its_api_refuse_requests_without_an_airflow_login(airflow: str, api: AirflowApi) -> None:
    state = f"{airflow}/pipeline/api/state"
    assert requests.get(state, timeout=30).status_code == 401
    assert requests.get(state, headers={"Authorization": "Bearer forged"}, timeout=30).status_code == 403
    assert requests.get(state, cookies={"_token": "forged"}, timeout=30).status_code == 403
    page = requests.get(f"{airflow}/pipeline/", allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login")
    assert "next=%2Fplugin%2Fpipeline" in page.headers["location"] and "<table" not in page.text

    logged_in = api.session.get(state, timeout=60)
    assert logged_in.status_code == 200
    assert [t["topic"] for t in logged_in.json()["topics"]] == list(pipeline_topics())
    plugins = {p["name"]: p for p in api.call("GET", "/plugins")["plugins"]}
    views = plugins["crawlstore_pipeline"]["external_views"]
    assert {(v["url_route"], v["destination"]) for v in views} == {
        ("pipeline", "nav"),
        ("dag-pipeline", "dag"),
    }
    assert api.call("GET", "/plugins/importErrors")["import_errors"] == []


def test_the_page_shows_the_lag_and_health_that_kafka_and_the_consumers_report(
    ui: Any, native_stack: ModuleType, producer: Any, kit: Any, key_prefix: str, screenshot: Any
) -> None:
    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    supervisor = native_stack.base.SUPERVISOR
    hdfs_lag = f'#topics tr[data-topic="{TOPIC}"] td[data-sink="hdfs"]'
    assert supervisor.stop("consumer-hdfs")  # it commits what it wrote, then leaves its group
    try:
        before = kafka_lag(servers, "hdfs", TOPIC)
        producer(TOPIC, [kit.product(f"{key_prefix}{i}", i) for i in range(7)])

        def shown() -> tuple[bool, Any]:
            page_lag = number(frame(ui).locator(f"{hdfs_lag} .lag").inner_text())
            kafka = kafka_lag(servers, "hdfs", TOPIC)
            return page_lag == kafka == before + 7, (page_lag, kafka, before)

        eventually("the HDFS sink's lag, 7 more, as Kafka reports it", shown)
        hdfs_health = '#consumers tr[data-sink="hdfs"] td'
        eventually(
            "the HDFS consumer unreachable, its group empty",
            lambda: (
                frame(ui).locator(hdfs_health).nth(1).inner_text().startswith("unreachable")
                and "Empty (0)" in frame(ui).locator(hdfs_lag).inner_text(),
                frame(ui).locator("#consumers").inner_text(),
            ),
        )
        for sink in ("postgres", "opensearch"):  # they took the 7 records: lag 0, as in Kafka
            cell = f'#topics tr[data-topic="{TOPIC}"] td[data-sink="{sink}"]'
            eventually(
                f"{sink}'s lag, its group stable",
                lambda c=cell, s=sink: (
                    number(frame(ui).locator(f"{c} .lag").inner_text()) == kafka_lag(servers, s, TOPIC)
                    and "Stable (1)" in frame(ui).locator(c).inner_text(),
                    frame(ui).locator(c).inner_text(),
                ),
            )
        screenshot(ui, "pipeline-page-hdfs-stopped", full_page=True)
    finally:
        supervisor.start("consumer-hdfs")

    eventually(
        "the HDFS consumer back and caught up",
        lambda: (
            frame(ui).locator('#consumers tr[data-sink="hdfs"] td').nth(1).inner_text() == "ok"
            and number(frame(ui).locator(f"{hdfs_lag} .lag").inner_text()) == 0,
            frame(ui).locator(hdfs_lag).inner_text(),
        ),
        timeout_s=180,
    )


def test_replay_from_the_page_runs_a_dry_run_then_lands_the_fixed_records(
    ui: Any,
    api: AirflowApi,
    replay_unpaused: Any,
    pg: Any,
    kit: Any,
    key_prefix: str,
    screenshot: Any,
    send_dead_letters: Any,
) -> None:
    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    kind = f"postgres_page[{uuid.uuid4().hex[:6]}]*"  # wildcard characters: matched exactly all the same
    ids = [f"{key_prefix}{i}" for i in range(3)]
    items = [kit.product(k, i) for i, k in enumerate(ids)]
    send_dead_letters(servers, TOPIC, items, kind=kind, reason=HOSTILE)
    row = frame(ui).locator(f'section[data-dlq="{DLQ}"] tr[data-kind="{kind}"]')

    def counted() -> tuple[bool, Any]:
        records, groups = kafka_dead_letters(servers, DLQ)
        heading = frame(ui).locator(f'section[data-dlq="{DLQ}"] h3').inner_text()
        page_groups = {
            (r.get_attribute("data-sink"), r.get_attribute("data-kind")): number(
                r.locator("td.count").inner_text()
            )
            for r in frame(ui).locator(f'section[data-dlq="{DLQ}"] table.groups tbody tr').all()
        }
        return f"— {records:,} records" in heading and page_groups == dict(groups), (
            heading,
            page_groups,
            records,
        )

    eventually("the DLQ's counts by sink and error kind, as in Kafka", counted)
    eventually("the group pending", lambda: (row.locator("td.pending").inner_text() == "3", row.inner_text()))
    reason = row.locator("td.reason").inner_text()
    assert reason == HOSTILE  # shown as text: no element made of it, no script run
    assert frame(ui).locator("section td.reason img").count() == 0
    page_frame = next(f for f in ui.frames if "/pipeline/" in f.url)
    assert page_frame.evaluate("window.__pwned") is None

    with replay_unpaused(api):
        row.locator('button[data-action="replay"]').click()
        dry = frame(ui).locator('#replay .dry-run[data-state="success"]')
        dry.wait_for(timeout=300_000)
        assert "would replay 3" in dry.inner_text()
        dry_run = api.call("GET", f"/dags/dlq_replay/dagRuns/{dry.get_attribute('data-run')}")
        # Exactly this group, up to the DLQ's last offset as the page counted it.
        last = kafka_end(servers, DLQ) - 1
        filters = {"topic": TOPIC, "sink": "postgres", "error_kind": kind, "offset_to": last}
        assert dry_run["conf"] == {**filters, "dry_run": True}
        with pg.cursor() as cur:
            cur.execute("SELECT count(*) FROM products WHERE product_id LIKE %s", (key_prefix + "%",))
            assert cur.fetchone()[0] == 0  # a dry run changes nothing
        screenshot(ui, "pipeline-replay-dry-run", full_page=True)

        frame(ui).locator('button[data-action="replay-real"]').click()
        real = frame(ui).locator('#replay .real-run[data-state="success"]')
        real.wait_for(timeout=300_000)
        real_run = api.call("GET", f"/dags/dlq_replay/dagRuns/{real.get_attribute('data-run')}")
        assert real_run["conf"] == {**filters, "dry_run": False}
        assert "replayed 3" in real.inner_text()

    with pg.cursor() as cur:
        cur.execute("SELECT product_id FROM products WHERE product_id LIKE %s", (key_prefix + "%",))
        assert sorted(r[0] for r in cur.fetchall()) == ids
    eventually(
        "the group dealt with",
        lambda: (
            row.locator("td").nth(3).inner_text() == "replayed 3"
            and row.locator("td.pending").inner_text() == "0",
            row.inner_text(),
        ),
    )
    screenshot(ui, "pipeline-replay-done", full_page=True)

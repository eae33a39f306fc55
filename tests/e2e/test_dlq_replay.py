"""The dlq_replay DAG on the running Airflow, driven through the REST API as the UI drives it.

Each test runs the DAG unpaused for a block, without letting its schedule replay the shared
DLQs (`replay_unpaused`, tests/conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from crawlstore.items import item_type
from crawlstore.settings import PostgresSettings
from crawlstore.topics import dlq_topic, parking_topic, pipeline_topics
from demo.airflow_api import AirflowApi, AirflowApiError

ProductItem = item_type("product")

pytestmark = pytest.mark.e2e
DAG = "dlq_replay"


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str]) -> AirflowApi:
    client = AirflowApi(
        stack_env["AIRFLOW_API_URL"],
        stack_env.get("AIRFLOW_ADMIN_USER", "admin"),
        stack_env["AIRFLOW_ADMIN_PASSWORD"],
    )
    client.wait_for_dags([DAG])
    return client


@pytest.fixture
def pg(stack_env: dict[str, str]) -> Iterator[Any]:
    conn = psycopg2.connect(**PostgresSettings().connect_kwargs())  # type: ignore[call-arg]
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def prefix(pg: Any) -> Iterator[str]:
    """Product ids of this test; their rows are deleted afterwards (the ledger rows stay: handled)."""
    value = f"e2e{uuid.uuid4().hex[:10]}-"
    yield value
    with pg.cursor() as cur:
        cur.execute("DELETE FROM products WHERE product_id LIKE %s", (value + "%",))


def task_log(api: AirflowApi, run_id: str, try_number: int = 1) -> str:
    """The task's log (structured entries as JSON text); empty while the task does not exist yet."""
    with suppress(AirflowApiError):
        return _task_log(api, run_id, try_number)
    return ""


def _task_log(api: AirflowApi, run_id: str, try_number: int) -> str:
    entry = api.call(
        "GET",
        f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/replay/logs/{try_number}",
        params={"full_content": True},
    )
    return json.dumps(entry["content"])


def product(key: str, crawled_at: datetime, **fields: Any) -> ProductItem:
    values: dict[str, Any] = {
        "source": "testshop",
        "crawled_at": crawled_at,
        "product_id": key,
        "name": f"Product {key}",
        "price": Decimal("9.99"),
        "currency": "EUR",
        "url": f"https://shop.example/p/{key}",
        **fields,
    }
    return ProductItem.model_validate(values)


def end_offset(servers: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        return int(consumer.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)])
    finally:
        consumer.close()


def rows(pg: Any, prefix: str) -> dict[str, str]:
    with pg.cursor() as cur:
        cur.execute("SELECT product_id, kafka_topic FROM products WHERE product_id LIKE %s", (prefix + "%",))
        return dict(cur.fetchall())


def ledger(pg: Any, dlq: str, offsets: list[int]) -> dict[int, tuple[str, str]]:
    with pg.cursor() as cur:
        cur.execute(
            "SELECT dlq_offset, outcome, run_id FROM dlq_replays "
            "WHERE dlq_topic = %s AND dlq_offset = ANY(%s)",
            (dlq, offsets),
        )
        return {int(o): (outcome, run) for o, outcome, run in cur.fetchall()}


@pytest.fixture
def own_topic(stack_env: dict[str, str], pg: Any) -> Iterator[str]:
    """`test.<uuid>` with its `-dlq` and `-dlq-parking`; deleted afterwards with its ledger rows."""
    name = f"test.{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
    topics = [NewTopic(name, 3, 1), NewTopic(dlq_topic(name), 1, 1), NewTopic(parking_topic(name), 1, 1)]
    admin.create_topics(topics)
    yield name
    with pg.cursor() as cur:
        cur.execute("DELETE FROM dlq_replays WHERE dlq_topic = %s", (dlq_topic(name),))
    for topic in topics:
        with suppress(KafkaError):
            admin.delete_topics([topic.name])
    admin.close()


def test_manual_runs_from_the_api_dry_run_then_replay_with_progress_and_summary_in_the_log(
    api: AirflowApi,
    stack_env: dict[str, str],
    pg: Any,
    prefix: str,
    own_topic: str,
    replay_unpaused: Any,
    send_dead_letters: Any,
) -> None:
    servers, dlq = stack_env["KAFKA_BOOTSTRAP_SERVERS"], dlq_topic(own_topic)
    now = datetime.now(UTC).replace(microsecond=0)
    good = [product(f"{prefix}{i}", now - timedelta(minutes=5)) for i in range(40)]
    nul = [product(f"{prefix}nul{i}", now - timedelta(minutes=5), name=f"NUL \u0000 {i}") for i in range(2)]
    offsets = send_dead_letters(servers, own_topic, good + nul)
    before = end_offset(servers, dlq)

    with replay_unpaused(api):
        dry_id = api.trigger(DAG, conf={"topic": own_topic, "dry_run": True})
        assert api.wait_for_run(DAG, dry_id, timeout_s=300) == "success"
        dry = api.xcom(DAG, dry_id, "replay")
        assert (dry["would_replay"], dry["scanned"], dry["skipped"]) == (42, 42, 0)
        assert dry["by_sink"] == {"postgres": {"would_replay": 42}}
        assert dry["by_error_class"] == {"consumers.errors.StoreRejected": {"would_replay": 42}}
        assert (
            rows(pg, prefix) == {} and ledger(pg, dlq, offsets) == {} and end_offset(servers, dlq) == before
        )
        assert dry["committed"] == {}

        # ~7 s at 6 records/s: long enough for progress lines in the task log.
        run_id = api.trigger(DAG, conf={"topic": own_topic, "sink": "postgres", "rate_limit": 6})
        assert api.wait_for_run(DAG, run_id, timeout_s=300) == "success"
    summary = api.xcom(DAG, run_id, "replay")
    assert (summary["replayed"], summary["failed_again"], summary["parked"], summary["republished"]) == (
        40,
        2,
        0,
        0,
    )
    assert set(rows(pg, prefix)) == {i.key for i in good}
    assert set(rows(pg, prefix).values()) == {dlq}
    assert {outcome for outcome, _ in ledger(pg, dlq, offsets).values()} == {"replayed", "failed_again"}
    assert summary["committed"] == {f"{dlq}[0]": before}
    assert end_offset(servers, dlq) == before + 2  # the NUL records are back, replay count 1

    log = task_log(api, run_id)
    assert "progress " + dlq in log
    assert "replay summary: replayed=40 failed_again=2 parked=0 republished=0 skipped=0" in log
    assert "by sink postgres: failed_again=2, replayed=40" in log


def test_backfill_of_two_days_replays_only_those_days_failures(
    api: AirflowApi,
    stack_env: dict[str, str],
    pg: Any,
    prefix: str,
    replay_unpaused: Any,
    send_dead_letters: Any,
) -> None:
    """Dead letters of three past days in crawl.products-dlq; a backfill of the first two days."""
    servers, dlq = stack_env["KAFKA_BOOTSTRAP_SERVERS"], "crawl.products-dlq"
    days = [datetime(2026, 11, d, tzinfo=UTC) for d in (10, 11, 12)]
    offsets: dict[datetime, list[int]] = {}
    for n, day in enumerate(days):
        items = [product(f"{prefix}d{day.day}-{i}", day + timedelta(hours=9)) for i in range(3)]
        offsets[day] = send_dead_letters(
            servers, "crawl.products", items, failed_at=day + timedelta(hours=12 + n)
        )
    ids = {day: {f"{prefix}d{day.day}-{i}" for i in range(3)} for day in days}

    with replay_unpaused(api):
        backfill = api.call(
            "POST",
            "/backfills",
            json={
                "dag_id": DAG,
                "from_date": days[0].isoformat(),
                "to_date": days[1].isoformat(),
                "run_backwards": False,
                # a rerun of this test finds the runs of these days done: run them again
                "dag_run_conf": {},
                "reprocess_behavior": "completed",
                "max_active_runs": 2,
            },
        )
        deadline = time.monotonic() + 600
        while True:
            runs = api.call(
                "GET",
                f"/dags/{DAG}/dagRuns",
                params={
                    "logical_date_gte": days[0].isoformat(),
                    "logical_date_lte": days[1].isoformat(),
                    "limit": 10,
                },
            )
            states = {r["dag_run_id"]: r["state"] for r in runs["dag_runs"]}
            if len(states) == 2 and set(states.values()) <= {"success", "failed"}:
                break
            assert time.monotonic() < deadline, f"backfill {backfill['id']} not done: {states}"
            time.sleep(2)
    assert set(states.values()) == {"success"}, states
    run_of_day = {r["logical_date"][:10]: r["dag_run_id"] for r in runs["dag_runs"]}
    assert all(r["run_type"] == "backfill" for r in runs["dag_runs"])

    stored = rows(pg, prefix)
    assert set(stored) == ids[days[0]] | ids[days[1]]  # day 12 is left for its own run
    handled = ledger(pg, dlq, [o for day in days for o in offsets[day]])
    for day in days[:2]:
        run_id = run_of_day[day.date().isoformat()]
        assert {handled[o] for o in offsets[day]} == {("replayed", run_id)}
        summary = api.xcom(DAG, run_id, "replay")
        # No topic given: every pipeline topic's DLQ.
        assert summary["replayed"] >= 3 and summary["scope"].startswith(
            f"topics {', '.join(pipeline_topics())}"
        )
        assert (
            f"failed_at in [{day.isoformat()}, {(day + timedelta(days=1)).isoformat()})" in summary["scope"]
        )
    assert not set(offsets[days[2]]) & set(handled)

    # The day-12 failures are still there for a later run: replay exactly them (and clean up).
    with replay_unpaused(api):
        run_id = api.trigger(
            DAG,
            conf={
                "topic": "crawl.products",
                "sink": "postgres",
                "offset_from": min(offsets[days[2]]),
                "offset_to": max(offsets[days[2]]),
            },
        )
        assert api.wait_for_run(DAG, run_id, timeout_s=300) == "success"
    assert api.xcom(DAG, run_id, "replay")["replayed"] == 3
    assert set(rows(pg, prefix)) == ids[days[0]] | ids[days[1]] | ids[days[2]]


def test_a_replay_task_killed_midway_and_cleared_continues_without_duplicates_or_gaps(
    api: AirflowApi,
    stack_env: dict[str, str],
    pg: Any,
    prefix: str,
    own_topic: str,
    replay_unpaused: Any,
    send_dead_letters: Any,
) -> None:
    """Mark the running task failed (Airflow terminates it), then clear it: try 2 resumes."""
    servers, dlq = stack_env["KAFKA_BOOTSTRAP_SERVERS"], dlq_topic(own_topic)
    now = datetime.now(UTC).replace(microsecond=0)
    items = [product(f"{prefix}{i}", now - timedelta(minutes=5)) for i in range(120)]
    offsets = send_dead_letters(servers, own_topic, items)

    with replay_unpaused(api):
        run_id = api.trigger(DAG, conf={"topic": own_topic, "rate_limit": 10})  # ~12 s
        deadline = time.monotonic() + 120
        while "progress " + dlq not in task_log(api, run_id, try_number=1):  # midway, ~5 s in
            assert time.monotonic() < deadline, api.task_states(DAG, run_id)
            time.sleep(0.5)
        api.call("PATCH", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/replay", json={"new_state": "failed"})
        assert api.wait_for_run(DAG, run_id, timeout_s=120) == "failed"
        # The run is failed at once; its process gets SIGTERM, finishes its chunk and exits.
        first_try = ""
        while "replay summary" not in first_try:
            assert time.monotonic() < deadline, first_try[-2000:]
            time.sleep(1)
            first_try = task_log(api, run_id, try_number=1)
        done_before = len(ledger(pg, dlq, offsets))
        assert 40 <= done_before < 120
        api.call(
            "POST",
            f"/dags/{DAG}/clearTaskInstances",
            json={
                "dry_run": False,
                "task_ids": ["replay"],
                "dag_run_id": run_id,
                "only_failed": True,
                "reset_dag_runs": True,
            },
        )
        time.sleep(2)
        assert api.wait_for_run(DAG, run_id, timeout_s=300) == "success"
    summary = api.xcom(DAG, run_id, "replay")
    assert summary["replayed"] == 120 - done_before  # what the killed try had not done
    handled = ledger(pg, dlq, offsets)
    assert len(handled) == 120 and {o for o, _ in handled.values()} == {"replayed"}
    assert set(rows(pg, prefix)) == {i.key for i in items}  # primary key: each exactly once
    assert summary["committed"] == {f"{dlq}[0]": 120}
    assert "SIGTERM: stopping after the current chunk" in first_try
    assert "a rerun with the same run id continues there" in first_try

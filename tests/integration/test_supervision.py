"""Supervision of the native stack: what `kill -9` does to its consumers and to Airflow's scheduler.

These kill processes of the running stack (supervisord restarts them), so they are ordered with
the outage tests, after every other test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pytest
import requests

from crawlstore.settings import PostgresSettings
from demo.airflow_api import AirflowApi

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOPIC = "crawl.products"  # the stack's own consumers read it
RECORDS = 3000
KILLED = ["consumer-postgres", "consumer-opensearch", "consumer-hdfs", "airflow-scheduler"]


def status() -> str:
    done = subprocess.run(
        ["python3", "stack/nativestack.py", "status"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout


def test_killed_consumers_and_scheduler_are_restarted_and_nothing_is_lost_or_doubled(
    kit: Any,
    producer: Any,
    pg_settings: PostgresSettings,
    opensearch_url: str,
    webhdfs: Any,
    stack_env: dict[str, str],
    native_stack: ModuleType,
) -> None:
    stack = native_stack
    before = {name: stack.base.pid_of(name) for name in KILLED}
    assert all(before.values()), f"not all supervised: {before}\n{status()}"
    restarts_before = stack.base.SUPERVISOR.restarts()
    prefix = f"sv{uuid.uuid4().hex[:10]}-"
    items = [kit.product(f"{prefix}{i}", i) for i in range(RECORDS)]
    sent: list[Any] = []

    def produce() -> None:  # ~15 s of steady load; the kills land in the middle of it
        for start in range(0, RECORDS, 100):
            sent.extend(producer(TOPIC, items[start : start + 100]))
            time.sleep(0.5)

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    time.sleep(5)
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)
    writer.join(120)
    assert len(sent) == RECORDS

    def restarted() -> bool:
        now = {name: stack.base.pid_of(name) for name in KILLED}
        return all(now[n] and now[n] != before[n] for n in KILLED)

    kit.eventually("every killed process running again under a new PID", restarted, 120)
    restarts = stack.base.SUPERVISOR.restarts()
    for name in KILLED:
        assert restarts.get(name, 0) == restarts_before.get(name, 0) + 1, restarts
    shown = status()
    for name in KILLED:
        assert f"{name}: restarted" in shown, shown
    supervisord_log = (ROOT / ".stack" / "logs" / "supervisord.log").read_text()
    assert "exited: consumer-hdfs (terminated by SIGKILL; not expected)" in supervisord_log

    # Every record once in each store, from the consumers that supervisord started again.
    def pg_keys() -> list[str]:
        with psycopg2.connect(**pg_settings.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("SELECT product_id FROM products WHERE product_id LIKE %s", (prefix + "%",))
            keys = [r[0] for r in cur.fetchall()]
        conn.close()
        return keys

    def os_docs() -> int:
        requests.post(f"{opensearch_url}/crawl-products/_refresh", timeout=30)
        query = {"query": {"ids": {"values": [i.key for i in items]}}}
        r = requests.get(f"{opensearch_url}/crawl-products/_count", json=query, timeout=30)
        return int(r.json()["count"]) if r.status_code == 200 else 0

    def hdfs_lines() -> list[dict[str, Any]]:
        files = webhdfs.files("/crawlstore/topics", TOPIC)
        return [line for line in kit.jsonl_lines(files) if line["product_id"].startswith(prefix)]

    kit.eventually("every record in PostgreSQL", lambda: len(pg_keys()) == RECORDS, 180)
    assert sorted(pg_keys()) == sorted(i.key for i in items)
    kit.eventually("every record in HDFS", lambda: len(hdfs_lines()) >= RECORDS, 180)
    lines = hdfs_lines()
    positions = [(line["kafka"]["partition"], line["kafka"]["offset"]) for line in lines]
    assert len(positions) == len(set(positions)) == RECORDS  # none twice: committed files fence
    assert {(s.partition, s.offset) for s in sent} == set(positions)
    kit.eventually("every record in OpenSearch", lambda: os_docs() == RECORDS, 180)

    # The restarted scheduler runs DAGs again: a triggered crawl succeeds.
    api = AirflowApi(
        stack_env["AIRFLOW_API_URL"], stack_env["AIRFLOW_ADMIN_USER"], stack_env["AIRFLOW_ADMIN_PASSWORD"]
    )
    dag_id = "crawl_demo_sensors"
    api.wait_for_dags([dag_id])
    run_id = api.trigger_now(dag_id, conf={"max_pages": 1})
    api.unpause(dag_id)
    try:
        state = api.wait_for_run(dag_id, run_id, timeout_s=300)
    finally:
        api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    assert state == "success", api.task_states(dag_id, run_id)


def test_a_consumer_that_stops_on_purpose_stays_stopped_and_status_says_why(
    tmp_path: Path, kit: Any, native_stack: ModuleType
) -> None:
    """A supervisord of its own, run with the stack's consumer settings, and two stand-in programs:
    one exits as the circuit breaker does (exit 3 after a while, its reason logged as an ERROR),
    one crashes (exit 4). Only the crash is restarted."""
    stack = native_stack
    consumer = stack.services.consumer_programs()[0]
    supervisor = stack.supervision.Supervisor(
        tmp_path, stack.base.SUPERVISOR.venv, tmp_path / "run", tmp_path / "logs"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    reason = "CIRCUIT BREAKER OPEN, postgres consumer stops: 1000 dead letters in a row"

    def stand_in(name: str, code: int, message: str) -> Any:
        script = f"import sys, time; time.sleep(4); print({message!r}, flush=True); sys.exit({code})"
        return stack.supervision.Program(
            name,
            [sys.executable, "-c", script],
            final_exits=consumer.final_exits,
            start_s=consumer.start_s,
        )

    programs = [
        stand_in("breaker", 3, f"2026-12-01 10:00:00,000 ERROR consumers.runtime: {reason}"),
        stand_in("crasher", 4, "2026-12-01 10:00:00,000 ERROR consumers.runtime: consumer crashed"),
    ]
    supervisor.ensure(programs, dict(os.environ))
    try:
        for p in programs:
            supervisor.start(p.name)

        def settled() -> bool:
            info = supervisor.info()
            return info["breaker"]["statename"] == "EXITED" and supervisor.restarts().get("crasher", 0) >= 2

        kit.eventually("the breaker stopped, the crasher restarted twice", settled, 60)
        time.sleep(6)  # longer than a start and a run: the breaker would have been restarted by now
        info = supervisor.info()
        assert info["breaker"]["statename"] == "EXITED" and info["breaker"]["exitstatus"] == 3
        assert "breaker" not in supervisor.restarts()
        assert info["crasher"]["statename"] in {"STARTING", "RUNNING"}
    finally:
        supervisor.shutdown()
    note = stack.program_note(info["breaker"], 0, tmp_path / "logs")
    assert note.startswith("stopped by itself (exit 3), not restarted:") and reason in note, note

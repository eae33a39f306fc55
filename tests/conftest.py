"""Shared test setup: tests that restart the whole stack run last, after everything else; a
headless browser for the UI tests; the dlq_replay DAG unpaused for a block of a test.

Queued runs of a paused DAG never start, so a test that runs dlq_replay unpauses the DAG and
pauses it again. On unpause the scheduler would add a scheduled run for the last complete day,
which replays whatever failed that day in the shared DLQs; `occupy_schedule` first triggers a
no-op run at that logical date, so the scheduler finds the slot taken and the tests change nothing
but their own records.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from demo.airflow_api import AirflowApi

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / ".stack" / "logs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by `make up`
REPLAY_DAG = "dlq_replay"
NO_OP = {"dry_run": True, "topic": "crawl.readings", "offset_from": 10**15}  # reads nothing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `down`/`up` of the whole stack would pull the services from under other tests.
    items.sort(key=lambda item: item.get_closest_marker("stack_lifecycle") is not None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Let go of Airflow's ORM session quietly (the DAG tests open one in this process).

    The outage tests restart PostgreSQL under it; Airflow's own exit hook would then print a
    traceback about the dead connection after a passing run.
    """
    settings = sys.modules.get("airflow.settings")
    if settings is None or getattr(settings, "Session", None) is None:
        return
    with contextlib.suppress(Exception):
        settings.Session.remove()
    settings.Session.registry.clear()
    with contextlib.suppress(Exception):
        settings.dispose_orm(do_log=False)


STACK_VARS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "POSTGRES_HOST",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "OPENSEARCH_URL",
    "WEBHDFS_URL",
    "HDFS_USER",
    "AIRFLOW_API_URL",
    "AIRFLOW_ADMIN_PASSWORD",
)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The native stack's settings; integration tests read them from the environment (`make test`)."""
    missing = [n for n in STACK_VARS if not os.environ.get(n)]
    if missing:
        pytest.fail(
            f"missing env {missing}: run the tests with `make test` (it loads .stack/env), "
            "or `set -a; . .stack/env; set +a` first",
            pytrace=False,
        )
    return dict(os.environ)


def occupy_schedule(api: AirflowApi) -> None:
    """Take the slot of the scheduled run the scheduler would add on unpause (see module doc)."""
    dag = api.call("GET", f"/dags/{REPLAY_DAG}")
    due = dag.get("next_dagrun_run_after")
    if not due or datetime.fromisoformat(due) > datetime.now(UTC):
        return
    slot = dag["next_dagrun_logical_date"]
    taken = api.call(
        "GET", f"/dags/{REPLAY_DAG}/dagRuns", params={"logical_date_gte": slot, "logical_date_lte": slot}
    )
    if not taken["dag_runs"]:  # a run there already makes the scheduler skip the slot and move on
        run_id = api.trigger(REPLAY_DAG, conf=NO_OP, logical_date=slot)
        api.unpause(REPLAY_DAG)
        assert api.wait_for_run(REPLAY_DAG, run_id, timeout_s=300) == "success"


@contextmanager
def unpaused(api: AirflowApi) -> Iterator[None]:
    """The DAG unpaused for the block; afterwards paused again, and runs the block left unfinished
    (a failed assertion) marked failed, so they do not hold the DAG's one active-run slot."""
    started = datetime.now(UTC).isoformat()
    try:
        occupy_schedule(api)
        api.unpause(REPLAY_DAG)
        yield
    finally:
        api.call("PATCH", f"/dags/{REPLAY_DAG}", json={"is_paused": True})  # other tests expect it paused
        runs = api.call("GET", f"/dags/{REPLAY_DAG}/dagRuns", params={"run_after_gte": started, "limit": 100})
        for run in runs["dag_runs"]:
            if run["state"] in ("queued", "running"):
                api.call("PATCH", f"/dags/{REPLAY_DAG}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})


@pytest.fixture
def replay_unpaused() -> Callable[[AirflowApi], AbstractContextManager[None]]:
    """`with replay_unpaused(api):` runs its block with dlq_replay unpaused (see module doc)."""
    return unpaused


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    """Headless chromium (the system's: no browser download)."""
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield chromium
    with contextlib.suppress(Exception):
        chromium.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshot() -> Callable[..., Path]:
    """`screenshot(page, name)` saves the page as .stack/logs/screenshots/<name>.png."""

    def take(page: Any, name: str, full_page: bool = False) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture(scope="session")
def send_dead_letters() -> Callable[..., list[int]]:
    """`send_dead_letters(servers, topic, items, failed_at=None, kind=..., reason=...)`: dead letters
    of `items` as the PostgreSQL sink writes them when the store refuses a record; their DLQ offsets."""
    from kafka import KafkaProducer

    from consumers.errors import StoreRejected
    from crawlstore.dlq import STAGE_SINK, dead_letter
    from crawlstore.messages import Record, encode_item

    def send(
        servers: str,
        topic: str,
        items: list[Any],
        failed_at: datetime | None = None,
        kind: str = "postgres_23514",
        reason: str = "check constraint",
    ) -> list[int]:
        producer = KafkaProducer(bootstrap_servers=servers, acks="all")
        futures = []
        for i, item in enumerate(items):
            message = encode_item(item, topic, "test-crawl")
            headers = tuple(message.headers)
            original = Record(
                topic, i % 3, 5000 + i, message.key, message.value, message.timestamp_ms, headers
            )
            error = StoreRejected(kind, reason)
            letter = dead_letter(original, connector="postgres", stage=STAGE_SINK, error=error, now=failed_at)
            futures.append(
                producer.send(
                    letter.topic,
                    key=letter.key,
                    value=letter.value,
                    headers=letter.headers,
                    timestamp_ms=letter.timestamp_ms,
                )
            )
        producer.flush(30)
        offsets = [f.get(timeout=30).offset for f in futures]
        producer.close()
        return offsets

    return send

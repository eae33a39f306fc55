"""What a user does in the Airflow UI, through the same REST API, on the running native Airflow."""

from __future__ import annotations

import time

import pytest

from crawlstore.sources import SOURCES
from demo.airflow_api import AirflowApi

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str]) -> AirflowApi:
    return AirflowApi(
        stack_env["AIRFLOW_API_URL"],
        stack_env.get("AIRFLOW_ADMIN_USER", "admin"),
        stack_env["AIRFLOW_ADMIN_PASSWORD"],
    )


def test_every_source_dag_is_listed_without_import_errors(api: AirflowApi) -> None:
    wanted = [f"crawl_{s.name}" for s in SOURCES]
    api.wait_for_dags(wanted)
    assert api.call("GET", "/importErrors")["import_errors"] == []
    for dag_id in wanted:
        dag = api.call("GET", f"/dags/{dag_id}")
        source = next(s for s in SOURCES if f"crawl_{s.name}" == dag_id)
        assert {t["name"] for t in dag["tags"]} >= {"crawl", source.kind, source.topic}


def test_a_triggered_run_succeeds_and_reports_its_counts(api: AirflowApi) -> None:
    dag_id = "crawl_demo_sensors"
    api.wait_for_dags([dag_id])

    def scheduled_runs() -> set[str]:
        runs = api.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1000})["dag_runs"]
        return {r["dag_run_id"] for r in runs if r["run_type"] == "scheduled"}

    before = scheduled_runs()
    run_id = api.trigger_now(dag_id, conf={"max_pages": 1})
    api.unpause(dag_id)
    try:
        state = api.wait_for_run(dag_id, run_id, timeout_s=300)
        time.sleep(6)  # a scheduler loop or two: long enough for it to add a run, if it were going to
        added = scheduled_runs() - before
    finally:
        api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    # Unpausing added no scheduled run next to ours: the demo publishes each item once.
    assert added == set()
    assert state == "success", api.task_states(dag_id, run_id)
    assert api.task_states(dag_id, run_id) == {
        "crawl": "success",
        "validate": "success",
        "publish_kafka": "success",
    }
    crawled = api.xcom(dag_id, run_id, "crawl")
    validated = api.xcom(dag_id, run_id, "validate")
    published = api.xcom(dag_id, run_id, "publish_kafka")
    assert crawled["items"] == validated["valid"] + validated["invalid"] > 0
    assert validated["dead_lettered"] == validated["invalid"]
    assert published["published"] == validated["valid"]

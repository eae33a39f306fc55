"""A small client of Airflow's REST API (v2): what the demo and the API tests do in the UI."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import requests

log = logging.getLogger(__name__)
FINISHED = {"success", "failed"}
STARTED = {"running", "success", "failed", "up_for_retry"}


class AirflowApiError(RuntimeError):
    """The API refused a call or a run did not finish in time."""


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 15.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout_s
        self.session = requests.Session()
        token = self.session.post(
            f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=timeout_s
        )
        if token.status_code not in (200, 201):
            raise AirflowApiError(f"login to {self.base} failed: HTTP {token.status_code} {token.text[:200]}")
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base}/api/v2{path}", timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            raise AirflowApiError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self.call("GET", "/dags", params={"limit": 100})["dags"]]

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 120.0) -> None:
        """DAG files are picked up by the dag-processor every few seconds after a change."""
        deadline = time.monotonic() + timeout_s
        while missing := sorted(set(dag_ids) - set(self.dag_ids())):
            if time.monotonic() > deadline:
                errors = self.call("GET", "/importErrors")["import_errors"]
                raise AirflowApiError(
                    f"DAGs {missing} not parsed after {timeout_s:.0f}s; import errors: {errors}"
                )
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        run = self.call(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf or {}}
        )
        return str(run["dag_run_id"])

    def trigger_now(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run that unpausing will not double.

        On unpause the scheduler adds a run for the latest due interval of the schedule; a run
        triggered at that logical date takes the slot, and the scheduler skips it.
        """
        dag = self.call("GET", f"/dags/{dag_id}")
        due_at, logical = dag.get("next_dagrun_run_after"), dag.get("next_dagrun_logical_date")
        if due_at and logical and datetime.fromisoformat(due_at) <= datetime.now(UTC):
            try:
                return self.trigger(dag_id, conf, logical_date=logical)
            except AirflowApiError as exc:  # that slot is taken already: nothing will be added
                if "409" not in str(exc):
                    raise
        return self.trigger(dag_id, conf)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, timeout_s: float = 600.0) -> str:
        """Wait until the task has started (or finished); returns its state."""
        deadline = time.monotonic() + timeout_s
        while (state := self.task_states(dag_id, run_id).get(task_id)) not in STARTED:
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"{dag_id} run {run_id}: {task_id} still {state} after {timeout_s:.0f}s"
                )
            time.sleep(1)
        return str(state)

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600.0) -> str:
        """Poll until the run finishes, logging task states as they change; returns the run's state."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, str | None] = {}
        while True:
            state = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            tasks = self.task_states(dag_id, run_id)
            if tasks != last:
                log.info(
                    "%s %s: %s", dag_id, state, ", ".join(f"{t}={s or 'none'}" for t, s in tasks.items())
                )
                last = tasks
            if state in FINISHED:
                return str(state)
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{dag_id} run {run_id} still {state} after {timeout_s:.0f}s")
            time.sleep(2)

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        entry = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"deserialize": True},
        )
        return entry["value"]

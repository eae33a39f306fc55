"""Shared test setup: tests that restart the whole stack run last, after everything else."""

from __future__ import annotations

import contextlib
import os
import sys

import pytest


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

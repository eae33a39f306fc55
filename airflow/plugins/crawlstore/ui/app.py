"""The Pipeline page's FastAPI app, mounted by Airflow's API server at /pipeline (the plugin in
airflow/plugins/crawlstore_pipeline.py) and shown inside Airflow's UI at /plugin/pipeline.

Both routes need an Airflow login (the UI's session cookie; the API also takes a bearer token from
/auth/token) and read access to every DAG: the page shows every topic's dead letters. The page's
Replay buttons call Airflow's own REST API
(`POST /api/v2/dags/dlq_replay/dagRuns`) with the same login, so Airflow checks and records them
like any run triggered from its UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from crawlstore.ui.state import STATE

PAGE = Path(__file__).with_name("page.html")
app = FastAPI(title="crawlstore pipeline", docs_url=None, redoc_url=None, openapi_url=None)


def can_read_every_dag(user: BaseUser) -> bool:
    # Not requires_access_dag: it would take a `dag_id` from the query and check only that DAG.
    return bool(get_auth_manager().is_authorized_dag(method="GET", user=user))


def every_dag_readable(user: GetUserDep) -> None:
    if not can_read_every_dag(user):
        raise HTTPException(403, "the Pipeline page needs read access to every DAG")


@app.get("/api/state", dependencies=[Depends(every_dag_readable)])
async def state() -> dict[str, Any]:
    """Lag, rate and health per topic and sink; dead letters by sink and error kind."""
    return await run_in_threadpool(STATE.snapshot)


@app.get("/", response_class=HTMLResponse)
async def page(request: Request) -> Response:
    try:
        user = await get_user(request, None, None)
    except HTTPException:  # not logged in: Airflow's login, then back to the page inside the UI
        return RedirectResponse(get_auth_manager().get_url_login(next_url="/plugin/pipeline"), 303)
    if not can_read_every_dag(user):
        return HTMLResponse("<p>The Pipeline page needs read access to every DAG.</p>", 403)
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

"""The Pipeline page: an Airflow plugin that mounts crawlstore.ui's FastAPI app at /pipeline and
links it from the navigation (at /plugin/pipeline) and from every DAG's page (a "Pipeline" tab)."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from crawlstore.ui.app import app


class PipelinePagePlugin(AirflowPlugin):
    name = "crawlstore_pipeline"
    # Lists, as AirflowPlugin declares them.
    fastapi_apps: list[Any] = [  # noqa: RUF012
        {"app": app, "url_prefix": "/pipeline", "name": "Pipeline"}
    ]
    external_views: list[Any] = [  # noqa: RUF012
        {"name": "Pipeline", "href": "/pipeline/", "url_route": "pipeline", "nav_top_level": True},
        # On a DAG's page: the page shows that DAG's topic first.
        {
            "name": "Pipeline",
            "href": "/pipeline/?dag={DAG_ID}",
            "url_route": "dag-pipeline",
            "destination": "dag",
        },
    ]

"""One DAG per configured source: crawl → validate → publish_kafka, or for a polling source
(`poll:`) one long `poll` task on the @continuous schedule, each poll validated and published.

Sources live in crawlstore.sources; the task bodies in crawlstore.pipeline (imported inside
the tasks, so parsing this file stays cheap and does no I/O).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from crawlstore.settings import PageSettings
from crawlstore.sources import SOURCES, Source
from crawlstore.topics import dlq_topic


def dag_doc(source: Source) -> str:
    """The module's doc, with links to the source's topics in the Kafka UI and to the Pipeline page."""
    page, dlq = PageSettings(), dlq_topic(source.topic)
    return (
        f"{__doc__}\n\nItems go to [`{source.topic}`]({page.topic_url(source.topic)}), dead letters to "
        f"[`{dlq}`]({page.topic_url(dlq)}) (Kafka UI). Each sink's lag, the dead letters and their replay: "
        "the [Pipeline page](/plugin/pipeline), and this DAG's Pipeline tab."
    )


def build_dag(source: Source) -> None:
    @dag(
        dag_id=f"crawl_{source.name}",
        description=source.description,
        # Data intervals (not Airflow 3's default trigger timetable): each run crawls its own window.
        schedule=CronDataIntervalTimetable(source.schedule, timezone="UTC"),
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["crawl", source.kind, source.topic],
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
        params={
            "max_pages": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Stop after this many listing pages (empty: all)",
            )
        },
        doc_md=dag_doc(source),
    )
    def crawl_source() -> None:
        @task
        def crawl(
            params: dict[str, Any] | None = None,
            run_id: str | None = None,
            data_interval_start: datetime | None = None,
            data_interval_end: datetime | None = None,
            dag_run: Any = None,
        ) -> dict[str, Any]:
            from crawlstore import pipeline

            if data_interval_start is None or data_interval_end is None:  # triggered without a logical date
                data_interval_start, data_interval_end = pipeline.manual_interval(source, dag_run.run_after)
            interval = {"data_interval_start": data_interval_start, "data_interval_end": data_interval_end}
            return pipeline.crawl(source.name, str(run_id), (params or {}).get("max_pages"), interval)

        @task
        def validate(crawled: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
            from crawlstore import pipeline

            return pipeline.validate(source.name, str(run_id), crawled)

        @task
        def publish_kafka(validated: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
            from crawlstore import pipeline

            return pipeline.publish_kafka(source.name, str(run_id), validated)

        publish_kafka(validate(crawl()))

    crawl_source()


def build_poll_dag(source: Source) -> None:
    assert source.poll is not None
    run_s = int(source.poll["run_s"])

    @dag(
        dag_id=f"crawl_{source.name}",
        description=source.description,
        # One run at a time, the next one right after: polling never stops while unpaused.
        schedule="@continuous",
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["crawl", "poll", source.kind, source.topic],
        default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
        params={
            "duration_s": Param(
                run_s, type="integer", minimum=1, maximum=2 * run_s, description="How long this run polls"
            )
        },
        doc_md=dag_doc(source),
    )
    def poll_source() -> None:
        @task(execution_timeout=timedelta(seconds=run_s * 2 + 300))
        def poll(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
            from crawlstore import pipeline

            return pipeline.poll(source.name, str(run_id), (params or {}).get("duration_s"))

        poll()

    poll_source()


for _source in SOURCES:
    if _source.poll is None:
        build_dag(_source)
    else:
        build_poll_dag(_source)

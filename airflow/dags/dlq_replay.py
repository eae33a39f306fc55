"""Replay dead letters into the sink they failed in (or onto their original topic).

Scheduled and backfill runs replay the DLQ records whose failure time (`crawlstore.dlq.failed_at`)
falls in their data interval, so `airflow backfill create --dag-id dlq_replay --from-date D1
--to-date D2` replays exactly the failures of those days. Manual runs replay what the params
select (no time bound unless `failed_from`/`failed_to` are set). `dry_run` only reports what
would be replayed. Every DLQ record is handled once (ledger table `dlq_replays`); one that fails
again returns to the DLQ with its replay count increased, or to `<topic>-dlq-parking` once the
count reaches `max_replays`. Details: docs/replay.md. The engine is the consumers.replay package.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from consumers.replay.request import PARAMS
from crawlstore.topics import pipeline_topics


@dag(
    dag_id="dlq_replay",
    description="Replay dead letters to the failing sink or the original topic; backfillable by failure day",
    # A periodic timetable with data intervals: each run (each backfilled day) owns the failures of its day.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["dlq", "replay", *pipeline_topics()],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    # Generated from the fields of ReplayRequest, like the CLI's options (python -m consumers.replay).
    params={p.name: Param(p.param_default, **p.param_kwargs()) for p in PARAMS},
    doc_md=__doc__,
)
def dlq_replay() -> None:
    @task
    def replay(
        params: dict[str, Any] | None = None,
        run_id: str | None = None,
        data_interval_start: datetime | None = None,
        data_interval_end: datetime | None = None,
        dag_run: Any = None,
    ) -> dict[str, Any]:
        """Replay the run's dead letters; the log shows progress and the summary, the XCom the counts."""
        from airflow.sdk.exceptions import AirflowFailException

        from consumers.replay.request import request_from_params
        from consumers.replay.run import replay as replay_dlq
        from consumers.replay.run import stop_on_sigterm

        try:
            request = request_from_params(
                params or {},
                run_id=str(run_id),
                run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
                data_interval_start=data_interval_start,
                data_interval_end=data_interval_end,
            )
        except ValueError as exc:  # wrong params: a retry would fail the same way
            raise AirflowFailException(str(exc)) from exc
        with stop_on_sigterm() as stop:  # a killed task stops after its current chunk
            return replay_dlq(request, stop=stop).as_dict()

    replay()


dlq_replay()

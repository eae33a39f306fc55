"""How a dlq_replay DAG run's params and run type become a replay request (no services needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.replay.reader import RateLimiter
from consumers.replay.request import ReplayRequest, request_from_params, request_from_values
from crawlstore.topics import pipeline_topics

pytestmark = pytest.mark.unit
DAY = (datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC))


def resolve(run_type: str, interval: tuple[datetime, datetime] | None = DAY, **params: Any) -> ReplayRequest:
    start, end = interval or (None, None)
    return request_from_params(
        params, run_id="r1", run_type=run_type, data_interval_start=start, data_interval_end=end
    )


@pytest.mark.parametrize("run_type", ["scheduled", "backfill"])
def test_scheduled_and_backfill_runs_replay_the_failures_of_their_interval(run_type: str) -> None:
    request = resolve(run_type)
    assert (request.failed_from, request.failed_to) == DAY
    assert request.topics == pipeline_topics() and request.target == "sink" and request.max_replays == 3
    assert not request.dry_run and request.group == "crawlstore-dlq-replay.r1"


def test_manual_runs_have_no_time_bound_unless_given() -> None:
    assert (resolve("manual").failed_from, resolve("manual").failed_to) == (None, None)
    given = resolve("manual", failed_from="2026-11-12T00:00:00Z", failed_to="2026-11-13T00:00:00+00:00")
    assert given.failed_from == datetime(2026, 11, 12, tzinfo=UTC)
    assert given.failed_to == datetime(2026, 11, 13, tzinfo=UTC)


def test_a_scheduled_run_without_an_interval_refuses_to_replay_everything() -> None:
    with pytest.raises(ValueError, match="no data interval"):
        resolve("scheduled", interval=None)


def test_params_are_checked() -> None:
    request = resolve(
        "manual",
        topic="crawl.products",
        sink="hdfs",
        error_class="postgres_*",
        offset_from=3,
        offset_to="9",
        max_records=5,
        rate_limit=2.5,
        dry_run=True,
        target="topic",
        max_replays=5,
    )
    assert (request.topics, request.sink, request.offset_from, request.offset_to) == (
        ("crawl.products",),
        "hdfs",
        3,
        9,
    )
    assert (request.max_records, request.rate_limit, request.dry_run, request.target) == (
        5,
        2.5,
        True,
        "topic",
    )
    for bad in (
        {"topic": "crawl.products-dlq"},
        {"sink": "mysql"},
        {"target": "both"},
        {"offset_from": 9, "offset_to": 3},
        {"failed_from": "2026-11-12T00:00:00Z", "failed_to": "2026-11-11T00:00:00Z"},
        {"rate_limit": 0},
    ):
        with pytest.raises(ValueError, match="invalid replay request"):
            resolve("manual", **bad)


def test_rate_limiter_allows_one_seconds_burst_then_paces() -> None:
    now, slept = [0.0], []
    limiter = RateLimiter(
        10, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s))
    )
    for _ in range(3):
        limiter.acquire(10)
    assert slept == [pytest.approx(1.0), pytest.approx(1.0)]


def test_the_cli_options_and_the_dag_params_make_the_same_request() -> None:
    from consumers.replay.__main__ import parser

    argv = ["--run-id", "r1", "--topic", "crawl.products", "--sink", "hdfs", "--offset-to", "9", "--dry-run"]
    argv += ["--target", "topic", "--max-replays", "5", "--failed-from", "2026-11-12T00:00:00+00:00"]
    from_cli = request_from_values(vars(parser().parse_args(argv)), run_id="r1")
    from_dag = resolve(
        "manual",
        topic="crawl.products",
        sink="hdfs",
        offset_to=9,
        dry_run=True,
        target="topic",
        max_replays=5,
        failed_from="2026-11-12T00:00:00+00:00",
    )
    assert from_cli == from_dag
    assert from_cli.failed_from == datetime(2026, 11, 12, tzinfo=UTC)
    # Nothing given: the request's own defaults, from either side.
    assert request_from_values(vars(parser().parse_args(["--run-id", "r1"])), run_id="r1") == ReplayRequest(
        run_id="r1"
    )
    assert resolve("manual") == ReplayRequest(run_id="r1")
    with pytest.raises(SystemExit):
        parser().parse_args(["--run-id", "r1", "--sink", "mysql"])

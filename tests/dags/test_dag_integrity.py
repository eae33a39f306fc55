"""Every DAG file imports cleanly, declares what operators need, and does no I/O at parse time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

DAGS = Path(__file__).resolve().parents[2] / "airflow" / "dags"


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found"


def test_one_crawl_dag_per_source(dagbag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.sdk.definitions.timetables.simple import ContinuousTimetable

    from crawlstore.sources import SOURCES

    assert any(s.poll for s in SOURCES) and not all(s.poll for s in SOURCES)
    for source in SOURCES:
        dag = dagbag.dags[f"crawl_{source.name}"]
        if source.poll is not None:  # one long task polling, each poll validated and published
            assert [t.task_id for t in dag.topological_sort()] == ["poll"]
            assert isinstance(dag.timetable, ContinuousTimetable)
            assert dag.max_active_runs == 1 and dag.params["duration_s"] == source.poll["run_s"]
            continue
        assert [t.task_id for t in dag.topological_sort()] == ["crawl", "validate", "publish_kafka"]
        # Backfill needs a periodic schedule; the sensor source needs real data intervals.
        assert isinstance(dag.timetable, CronDataIntervalTimetable)
        assert dag.catchup is False
        assert "max_pages" in dag.params


def test_each_crawl_dag_links_to_its_topics_in_the_kafka_ui_and_to_the_pipeline_page(dagbag: Any) -> None:
    from crawlstore.settings import PageSettings
    from crawlstore.sources import SOURCES

    ui = PageSettings()
    for source in SOURCES:
        doc = dagbag.dags[f"crawl_{source.name}"].doc_md
        assert f"[`{source.topic}`]({ui.topic_url(source.topic)})" in doc
        assert f"[`{source.topic}-dlq`]({ui.topic_url(source.topic + '-dlq')})" in doc
        assert "[Pipeline page](/plugin/pipeline)" in doc


def test_the_replay_dag_offers_every_field_of_the_replay_request_as_a_param(dagbag: Any) -> None:
    from consumers.replay.request import ReplayRequest

    params = dagbag.dags["dlq_replay"].params
    assert set(params) == {
        "topic", "sink", "error_class", "error_kind", "failed_from", "failed_to", "offset_from", "offset_to",
        "max_records", "rate_limit", "dry_run", "target", "max_replays",
    }  # fmt: skip
    defaults = {name: params[name] for name in params}
    assert (defaults["topic"], defaults["target"], defaults["max_replays"], defaults["dry_run"]) == (
        None,
        ReplayRequest.target,
        ReplayRequest.max_replays,
        False,
    )
    assert params.get_param("sink").schema["enum"] == [None, "postgres", "opensearch", "hdfs", "validate"]


def test_every_dag_has_tags_and_retries(dagbag: Any) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None


def test_parsing_does_no_io_and_no_connection_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse every DAG file with an audit hook watching sockets and file opens."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    from crawlstore.config import config_dir

    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"connection lookup at parse time: {args}")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(no_lookup))
    events: list[tuple[str, str]] = []
    watching = {"on": False}
    dag_files = {str(p) for p in DAGS.glob("*.py")}
    # The DAGs are generated from the declared configuration: reading it is what parsing means.
    config = str(config_dir().resolve()) + "/"

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not watching["on"]:
            return
        if event in ("socket.connect", "socket.getaddrinfo", "subprocess.Popen"):
            events.append((event, repr(args)[:200]))
        elif event == "open" and isinstance(args[0], str):
            path = args[0]
            # Reading Python code is importing; anything else is I/O the DAG file does itself.
            if not (
                path.endswith((".py", ".pyc", ".so", ".pth"))
                or path in dag_files
                or path.startswith(config)
                or "/__pycache__/" in path
                or (path.endswith(("/", ".typed", ".json")) and "site-packages" in path)
            ):
                events.append((event, path))

    sys.addaudithook(hook)
    # Modules imported by the DAG files are imported afresh, so their import-time code runs under the hook.
    for name in [m for m in sys.modules if m.startswith(("crawlstore", "consumers"))]:
        monkeypatch.delitem(sys.modules, name)
    watching["on"] = True
    try:
        bag = DagBag(dag_folder=str(DAGS))
    finally:
        watching["on"] = False
    assert bag.import_errors == {}
    assert events == []

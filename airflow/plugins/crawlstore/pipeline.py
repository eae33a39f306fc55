"""The bodies of the crawl → validate → publish_kafka tasks; the DAG file only declares them.

Each run keeps its files in CRAWLSTORE_DATA_DIR/<source>/<run id>/, so rerunning a run
overwrites its own files and nothing else.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crawlstore.settings import PipelineSettings
from crawlstore.sources import Source, get_source

log = logging.getLogger(__name__)
PUBLISH_LOG_MARGIN_MS = 10 * 60 * 1000  # clocks of workers and brokers may differ by this much


def run_dir(source: Source, run_id: str) -> Path:
    safe_run = re.sub(r"[^A-Za-z0-9_.+-]", "_", run_id)
    if not safe_run.strip("."):  # "", "." and ".." would name the source's folder or its parent
        safe_run = "_" * max(1, len(safe_run))
    path = PipelineSettings().data_dir / source.name / safe_run
    path.mkdir(parents=True, exist_ok=True)
    return path


def manual_interval(source: Source, run_after: datetime) -> tuple[datetime, datetime]:
    """The interval a run triggered without a logical date covers: the last complete period."""
    import pendulum
    from airflow.timetables.interval import CronDataIntervalTimetable

    interval = CronDataIntervalTimetable(source.schedule, timezone="UTC").infer_manual_data_interval(
        run_after=pendulum.instance(run_after)
    )
    return interval.start, interval.end


def crawl(
    source_name: str,
    run_id: str,
    max_pages: int | None = None,
    interval: dict[str, datetime | None] | None = None,
) -> dict[str, Any]:
    """Run the source's spider in a child process; fail when the site is down or yields nothing.

    The run's data interval fills the source's URL placeholders, so a rerun of the same run asks
    the site for the same window.
    """
    from crawlstore.crawl import run_crawl

    source = get_source(source_name)
    output = run_dir(source, run_id) / "items.jsonl"
    params = {k: v.astimezone(UTC).isoformat() for k, v in (interval or {}).items() if v is not None}
    result = run_crawl(source, output, max_pages=max_pages, params=params)
    log.info("crawled %d item(s) from %s into %s", result.item_count, source.name, output)
    return {"items_path": str(output), "items": result.item_count}


def validate(source_name: str, run_id: str, crawled: dict[str, Any]) -> dict[str, Any]:
    """Check every item against its schema; invalid ones go to `<topic>-dlq` with the reason."""
    from crawlstore.connectors import VALIDATE
    from crawlstore.dlq import STAGE_VALIDATE, dead_letter
    from crawlstore.items import item_type, to_json_dict
    from crawlstore.messages import (
        CONTENT_TYPE,
        H_CONTENT_TYPE,
        H_RUN_ID,
        H_SCHEMA,
        H_SOURCE,
        Record,
        RecordRejected,
    )
    from crawlstore.producer import check_topics, produce_all
    from crawlstore.publish import connection_producer
    from crawlstore.topics import dlq_topic
    from crawlstore.validate import validate_file

    source = get_source(source_name)
    folder = run_dir(source, run_id)
    valid, invalid, report = validate_file(Path(crawled["items_path"]), source.kind)
    for line in report.lines():
        log.info("%s", line)
    valid_path = folder / "valid.jsonl"
    tmp = valid_path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for item in valid:
            out.write(json.dumps(to_json_dict(item), ensure_ascii=False) + "\n")
    tmp.replace(valid_path)
    (folder / "report.json").write_text(
        json.dumps(
            {
                "total": report.total,
                "valid": report.valid,
                "invalid": report.invalid,
                "duplicates": report.duplicates,
                "errors": dict(report.errors),
            },
            indent=2,
        )
    )

    dead_lettered = 0
    if invalid:
        producer = connection_producer()
        check_topics(producer, [dlq_topic(source.topic)])
        headers = [
            (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
            (H_SCHEMA, item_type(source.kind).schema_version.encode()),
            (H_SOURCE, source.name.encode()),
            (H_RUN_ID, run_id.encode()),
        ]
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        letters = (
            dead_letter(
                Record(
                    source.topic,
                    -1,
                    -1,
                    bad.key,
                    bad.raw,
                    int(bad.crawled_at.timestamp() * 1000) if bad.crawled_at else now_ms,
                    tuple(headers),
                ),
                connector=VALIDATE,
                stage=STAGE_VALIDATE,
                error=RecordRejected(bad.kinds[0], f"line {bad.line_no}: {bad.message}"),
            )
            for bad in invalid
        )
        dead_lettered = produce_all(producer, letters).delivered
        log.info("dead-lettered %d invalid item(s) to %s", dead_lettered, dlq_topic(source.topic))
    return {
        "valid_path": str(valid_path),
        "valid": report.valid,
        "invalid": report.invalid,
        "dead_lettered": dead_lettered,
        "errors": dict(report.errors),
    }


def publish_kafka(
    source_name: str,
    run_id: str,
    validated: dict[str, Any],
    window: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    """Publish the valid items (key = natural id) exactly once per run, or per poll window,
    however often it is retried or re-run; fail if any delivery fails, with nothing published."""
    from crawlstore.items import item_type
    from crawlstore.messages import encode_item
    from crawlstore.producer import check_topics, publish_once
    from crawlstore.publish import connection_publisher
    from crawlstore.topics import PUBLISH_LOG

    source = get_source(source_name)
    model = item_type(source.kind)
    if window is None:
        run_key, since_ms = f"{source.name}/{run_id}", first_publish_ms(source, run_id)
    else:  # a window is published once whichever run asks for it (a retry, or the next run)
        run_key = f"{source.name}/window/{window[0].isoformat()}..{window[1].isoformat()}"
        since_ms = int(window[1].timestamp() * 1000) - PUBLISH_LOG_MARGIN_MS
    producer, reader = connection_publisher(run_key)
    check_topics(producer, [source.topic, PUBLISH_LOG])
    with Path(validated["valid_path"]).open(encoding="utf-8") as lines:
        records = (encode_item(model.model_validate_json(line), source.topic, run_id) for line in lines)
        report = publish_once(producer, reader, run_key, records, since_ms)
    if not report.already_published:
        log.info("published to %s: %s", source.topic, report.summary())
    return {
        "published": report.delivered,
        "already_published": report.already_published,
        "seconds": round(report.seconds, 3),
        "rate": round(report.rate, 1),
        "by_partition": dict(report.by_partition),
    }


def first_publish_ms(source: Source, run_id: str) -> int:
    """When this run first tried to publish (less a margin for clocks): where the publish log is read from."""
    path = run_dir(source, run_id) / "publish_since.json"
    if not path.exists():
        path.write_text(json.dumps({"at_ms": int(datetime.now(UTC).timestamp() * 1000)}))
    return int(json.loads(path.read_text())["at_ms"]) - PUBLISH_LOG_MARGIN_MS


def poll(source_name: str, run_id: str, duration_s: float | None = None) -> dict[str, Any]:
    """A polling source's run: every few seconds fetch what is new, validate and publish it at once.

    Each window goes through the same validate and publish_kafka steps as a crawl (its files in
    the run's folder, overwritten by the next window); see crawlstore.crawl.poll.
    """
    from crawlstore.crawl.poll import PollState
    from crawlstore.crawl.poll import poll as poll_source
    from crawlstore.publish import connection_producer  # noqa: F401 (imported before the first poll's clock)

    source = get_source(source_name)
    if source.poll is None:
        raise ValueError(f"source {source.name} does not poll (no `poll:` in its configuration)")
    folder = run_dir(source, run_id)
    state = PollState(PipelineSettings().data_dir / source.name / "poll_state.json")

    def handle(items: list[dict[str, Any]], since: datetime, until: datetime) -> dict[str, Any]:
        path = folder / "items.jsonl"
        path.write_text(
            "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8"
        )
        validated = validate(source.name, run_id, {"items_path": str(path), "items": len(items)})
        published = (
            publish_kafka(source.name, run_id, validated, (since, until))
            if validated["valid"]
            else {"published": 0}
        )
        return {**validated, **published}

    return poll_source(source, state, duration_s or float(source.poll["run_s"]), handle)

"""The task bodies fail clearly when what they depend on is down."""

from __future__ import annotations

import json

import pytest

from crawlstore import pipeline
from crawlstore.crawl import CrawlFailed
from crawlstore.producer import PublishFailed

pytestmark = pytest.mark.integration


def test_crawl_fails_when_the_site_is_unreachable(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_SITE_URL", "http://127.0.0.1:1")  # nothing listens there
    with pytest.raises(CrawlFailed) as failed:
        pipeline.crawl("demo_shop", "test_site_down", max_pages=1)
    assert failed.value.reason == "unreachable"
    assert "127.0.0.1:1" in str(failed.value)


def test_publish_fails_when_kafka_is_down(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    crawled = pipeline.crawl("demo_shop", "test_kafka_down", max_pages=1)
    folder = pipeline.run_dir(pipeline.get_source("demo_shop"), "test_kafka_down")
    from crawlstore.validate import validate_file

    valid, _, _ = validate_file(folder / "items.jsonl", "product")
    assert crawled["items"] > 0 and valid
    (folder / "valid.jsonl").write_text("".join(v.model_dump_json() + "\n" for v in valid))
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:1"}}),
    )
    with pytest.raises(PublishFailed, match="Kafka is unreachable"):
        pipeline.publish_kafka("demo_shop", "test_kafka_down", {"valid_path": str(folder / "valid.jsonl")})

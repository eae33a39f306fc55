"""The task bodies fail clearly when what they depend on is down."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from crawlstore import pipeline
from crawlstore.crawl import CrawlFailed
from crawlstore.dlq import H_ERROR_KIND, H_EXC_MESSAGE, H_TRUNCATED_FROM
from crawlstore.messages import H_RUN_ID
from crawlstore.producer import PublishFailed

pytestmark = pytest.mark.integration


class TopicWindow:
    """The records a test appends to a topic: end offsets now, everything up to the end later."""

    def __init__(self, servers: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        self.partitions = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]
        self.start = self.consumer.end_offsets(self.partitions)

    def of_run(self, run_id: str) -> list[Any]:
        end = self.consumer.end_offsets(self.partitions)
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            self.consumer.seek(tp, self.start[tp])
        out: list[Any] = []
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            for batch in self.consumer.poll(timeout_ms=1000).values():
                out += [m for m in batch if dict(m.headers).get(H_RUN_ID) == run_id.encode()]
        self.consumer.close()
        return out


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


def test_a_crawl_with_a_2_mb_invalid_item_succeeds_and_its_slimmed_dead_letter_keeps_the_reason(
    stack_env: dict[str, str], kit: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRAWLSTORE_DATA_DIR", str(tmp_path))
    run_id = f"test_huge_{uuid.uuid4().hex[:8]}"
    good = [kit.product(f"{run_id}-{i}", i) for i in range(3)]
    huge = {**json.loads(good[0].model_dump_json()), "product_id": f"{run_id}-huge", "name": "A" * 2_000_000}
    items = tmp_path / "items.jsonl"
    items.write_text("".join(g.model_dump_json() + "\n" for g in good) + json.dumps(huge) + "\n")
    dlq = TopicWindow(stack_env["KAFKA_BOOTSTRAP_SERVERS"], "crawl.products-dlq")
    main = TopicWindow(stack_env["KAFKA_BOOTSTRAP_SERVERS"], "crawl.products")

    validated = pipeline.validate("demo_shop", run_id, {"items_path": str(items), "items": 4})
    published = pipeline.publish_kafka("demo_shop", run_id, validated)

    assert (validated["valid"], validated["invalid"], validated["dead_lettered"]) == (3, 1, 1)
    assert published["published"] == 3
    assert {m.key.decode() for m in main.of_run(run_id)} == {g.product_id for g in good}
    [letter] = dlq.of_run(run_id)
    headers = dict(letter.headers)
    assert letter.key == f"{run_id}-huge".encode() and len(letter.value) < 1_000_000
    assert letter.value.startswith(json.dumps(huge).encode()[:50_000])
    assert headers[H_TRUNCATED_FROM] == str(len(json.dumps(huge))).encode()
    assert b"name" in headers[H_EXC_MESSAGE] and headers[H_ERROR_KIND] == b"name:string_too_long"

"""Consumer settings, the Kafka config builder and the metrics text."""

from __future__ import annotations

import pytest

from consumers.kafka_config import consumer_config, producer_config
from consumers.metrics import ConsumerMetrics
from consumers.settings import ConsumerSettings, resolve
from crawlstore.config import current
from crawlstore.settings import KafkaSettings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONSUMER_"):
            monkeypatch.delenv(name)


def test_defaults_per_sink() -> None:
    config = resolve("postgres", ConsumerSettings())
    assert config.group == "crawlstore-postgres"
    # What the configuration declares: its topics, a pattern only for a declared topic family prefix.
    assert (config.topics, config.topic_pattern) == current().subscription()
    assert config.metrics_port == 9101
    assert resolve("opensearch", ConsumerSettings()).metrics_port == 9102
    hdfs = resolve("hdfs", ConsumerSettings())
    assert hdfs.metrics_port == 9103
    assert hdfs.batch_max_wait_s > config.batch_max_wait_s  # HDFS wants bigger files


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_GROUP", "g1")
    monkeypatch.setenv("CONSUMER_TOPICS", "a.b, c.d ,")
    monkeypatch.setenv("CONSUMER_BATCH_MAX_RECORDS", "7")
    monkeypatch.setenv("CONSUMER_BATCH_MAX_WAIT_MS", "250")
    monkeypatch.setenv("CONSUMER_METRICS_PORT", "0")
    config = resolve("hdfs", ConsumerSettings())
    assert (config.group, config.topics, config.topic_pattern) == ("g1", ("a.b", "c.d"), None)
    assert (config.batch_max_records, config.batch_max_wait_s, config.metrics_port) == (7, 0.25, 0)


def test_an_explicit_pattern_replaces_the_declared_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_TOPIC_PATTERN", r"^crawl\.[a-z_]+$")
    config = resolve("postgres", ConsumerSettings())
    assert (config.topics, config.topic_pattern) == ((), r"^crawl\.[a-z_]+$")


@pytest.mark.parametrize(
    "env",
    [
        {"CONSUMER_TOPIC_PATTERN": r"^crawl\..*"},  # would follow the -dlq topics
        {"CONSUMER_TOPIC_PATTERN": "crawl"},
        {"CONSUMER_TOPIC_PATTERN": "(unclosed"},
        {"CONSUMER_TOPICS": "crawl.products-dlq"},
        {"CONSUMER_TOPICS": "a", "CONSUMER_TOPIC_PATTERN": "^a$"},
        {"CONSUMER_HDFS_ROOT": "/a/../b"},
        {"CONSUMER_OPENSEARCH_INDEX_PREFIX": "Upper_"},
    ],
)
def test_bad_settings_fail_at_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError):
        ConsumerSettings()


def test_kafka_configs() -> None:
    kafka = KafkaSettings(bootstrap_servers="h1:9092, h2:9092")
    consumer = consumer_config(kafka, resolve("postgres", ConsumerSettings()))
    assert consumer["bootstrap_servers"] == ["h1:9092", "h2:9092"]
    assert consumer["enable_auto_commit"] is False
    assert consumer["group_id"] == "crawlstore-postgres"
    assert consumer["metadata_max_age_ms"] <= 10_000
    assert "consumer_timeout_ms" not in consumer  # the seed report's 10 s idle exit
    assert consumer["allow_auto_create_topics"] is False
    producer = producer_config(kafka, "postgres")
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True


def test_metrics_text_and_health() -> None:
    m = ConsumerMetrics("postgres", 'g"1')
    assert not m.health().ok
    m.set_state("consuming")
    assert not m.health().ok  # nothing assigned
    m.set_partitions(2, {("crawl.products", 0): 5, ("crawl.products", 1): 0})
    m.add(consumed=10, written=8, dead_lettered=2, retries=1, batches=1)
    m.sample_rate(0.0)
    m.add(written=100)
    m.sample_rate(10.0)
    assert m.health().ok
    assert m.rate() == pytest.approx(10.0)
    text = m.render()
    assert 'crawlstore_consumer_records_consumed_total{sink="postgres",group="g\\"1"} 10' in text
    assert (
        'crawlstore_consumer_lag{sink="postgres",group="g\\"1",topic="crawl.products",partition="0"} 5'
        in text
    )
    assert "# TYPE crawlstore_consumer_records_written_total counter" in text
    assert 'crawlstore_consumer_up{sink="postgres",group="g\\"1"} 1' in text
    m.set_state("retrying", "PostgreSQL unreachable")
    health = m.health()
    assert not health.ok and health.detail == "PostgreSQL unreachable"

"""Consumer settings from CONSUMER_* environment variables (12-factor), resolved per sink.

Connection settings of the stores and Kafka come from crawlstore.settings (KAFKA_*, POSTGRES_*,
OPENSEARCH_URL, WEBHDFS_URL/HDFS_USER); this module only adds how a consumer consumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.hdfs_files import safe_root
from crawlstore.config import current
from crawlstore.connectors import consumer_group
from crawlstore.topics import DLQ_SUFFIX, dlq_topic, pipeline_topics

MIB = 1024 * 1024


@dataclass(frozen=True)
class SinkDefaults:
    metrics_port: int
    batch_max_records: int
    batch_max_bytes: int
    batch_max_wait_ms: int
    batch_idle_ms: int


# HDFS wants few large files (small files are its classic problem), the others want low latency.
# HDFS's idle time is above a polling source's usual 10 s, so a steady poll does not make a file
# per poll: its records gather until the batch is a minute old.
SINK_DEFAULTS: dict[str, SinkDefaults] = {
    "postgres": SinkDefaults(9101, 2000, 8 * MIB, 500, 500),
    "opensearch": SinkDefaults(9102, 2000, 8 * MIB, 1000, 1000),
    "hdfs": SinkDefaults(9103, 200_000, 128 * MIB, 60_000, 15_000),
}


class ConsumerSettings(BaseSettings):
    """CONSUMER_* variables; unset ones fall back to the sink's defaults."""

    model_config = SettingsConfigDict(env_prefix="CONSUMER_", extra="ignore")

    group: str | None = Field(None, description="consumer group (default crawlstore-<sink>)")
    topics: str | None = Field(None, description="comma-separated topic names (instead of a pattern)")
    topic_pattern: str | None = Field(
        None, description="regex of topics to follow, new ones included (default: from the configuration)"
    )
    batch_max_records: int | None = Field(None, gt=0, description="flush after this many records")
    batch_max_bytes: int | None = Field(None, gt=0, description="flush after this many key+value bytes")
    batch_max_wait_ms: int | None = Field(
        None, gt=0, description="flush when the oldest record waited this long"
    )
    batch_idle_ms: int | None = Field(None, gt=0, description="flush when no record came for this long")
    metrics_host: str = Field(
        "127.0.0.1", description="bind address of /health and /metrics (0.0.0.0 in docker)"
    )
    metrics_port: int | None = Field(None, ge=0, le=65535, description="port (default 9101/9102/9103)")
    metadata_max_age_ms: int = Field(5000, gt=0, description="how often new matching topics are looked for")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition without stored offsets starts"
    )
    session_timeout_ms: int = Field(
        15_000, ge=6000, description="a crashed consumer's partitions move to another member after this"
    )
    max_poll_records: int = Field(2000, gt=0, description="records per Kafka poll at most")
    retry_initial_ms: int = Field(250, gt=0, description="first backoff delay on a transient error")
    retry_max_ms: int = Field(15_000, gt=0, description="backoff cap (retries never give up)")
    dlq_max_consecutive: int = Field(1000, ge=0, description="breaker: consecutive dead letters (0 = off)")
    dlq_max_ratio: float = Field(0.5, gt=0, le=1, description="breaker: dead-letter ratio over the window")
    dlq_window: int = Field(1000, gt=0, description="breaker: how many recent records the ratio covers")
    dlq_min_records: int = Field(200, gt=0, description="breaker: records seen before the ratio counts")
    shutdown_timeout_s: float = Field(20.0, gt=0, description="SIGTERM/SIGINT: time to flush and commit")
    progress_interval_s: float = Field(30.0, gt=0, description="seconds between progress log lines")
    log_level: str = Field("INFO", description="logging level")
    opensearch_index_prefix: str = Field(
        "crawl-", pattern=r"^[a-z0-9][a-z0-9_.-]{0,100}$", description="indices are <prefix><kind>s"
    )
    opensearch_timeout_s: float = Field(30.0, gt=0, description="timeout of one _bulk request")
    hdfs_root: str = Field(
        "/crawlstore/topics", pattern=r"^(/[A-Za-z0-9_.-]+)+$", description="directory of committed files"
    )
    hdfs_datanode_url: str | None = Field(
        None, description="replace the DataNode address of WebHDFS redirects (e.g. from outside docker)"
    )

    @field_validator("hdfs_root")
    @classmethod
    def _safe_root(cls, value: str) -> str:
        return safe_root(value)

    @model_validator(mode="after")
    def _one_subscription(self) -> ConsumerSettings:
        if self.topics and self.topic_pattern:
            raise ValueError("set CONSUMER_TOPICS or CONSUMER_TOPIC_PATTERN, not both")
        for topic in self.topic_list():
            if topic.endswith(DLQ_SUFFIX):
                raise ValueError(f"CONSUMER_TOPICS names a dead-letter topic: {topic}")
        if self.topic_pattern is not None:
            try:
                pattern = re.compile(self.topic_pattern)
            except re.error as exc:
                raise ValueError(f"CONSUMER_TOPIC_PATTERN is not a regex: {exc}") from exc
            probes = [dlq_topic(t) for t in pipeline_topics()] + ["test.x-dlq", "crawl.x-dlq"]
            if any(pattern.match(p) for p in probes):
                raise ValueError(
                    f"CONSUMER_TOPIC_PATTERN {self.topic_pattern!r} matches dead-letter topics "
                    f"(*{DLQ_SUFFIX}); exclude '-' or anchor it, e.g. ^crawl\\.[a-z_]+$"
                )
        return self

    def topic_list(self) -> list[str]:
        return [t.strip() for t in (self.topics or "").split(",") if t.strip()]


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything a consumer process needs to know, defaults applied."""

    sink: str
    group: str
    topics: tuple[str, ...]
    topic_pattern: str | None
    batch_max_records: int
    batch_max_bytes: int
    batch_max_wait_s: float
    batch_idle_s: float
    metrics_host: str
    metrics_port: int
    settings: ConsumerSettings


def resolve(sink: str, settings: ConsumerSettings) -> RuntimeConfig:
    defaults = SINK_DEFAULTS[sink]
    # By default a consumer follows what the configuration declares: the sources' topics, and
    # every topic under a declared prefix (crawlstore.config.Config.subscription).
    topics, pattern = tuple(settings.topic_list()), settings.topic_pattern
    if not topics and not pattern:
        topics, pattern = current().subscription()
    return RuntimeConfig(
        sink=sink,
        group=settings.group or consumer_group(sink),
        topics=topics,
        topic_pattern=pattern,
        batch_max_records=settings.batch_max_records or defaults.batch_max_records,
        batch_max_bytes=settings.batch_max_bytes or defaults.batch_max_bytes,
        batch_max_wait_s=(settings.batch_max_wait_ms or defaults.batch_max_wait_ms) / 1000,
        batch_idle_s=(settings.batch_idle_ms or defaults.batch_idle_ms) / 1000,
        metrics_host=settings.metrics_host,
        metrics_port=defaults.metrics_port if settings.metrics_port is None else settings.metrics_port,
        settings=settings,
    )

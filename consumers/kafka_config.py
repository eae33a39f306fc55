"""The one place that turns settings into kafka-python client configs (consumer and DLQ producer)."""

from __future__ import annotations

import os
import socket
from typing import Any

from consumers.settings import RuntimeConfig
from crawlstore.settings import KafkaSettings


def client_id(sink: str) -> str:
    """Names the process in broker logs and group descriptions."""
    return f"crawlstore-{sink}-{socket.gethostname()}-{os.getpid()}"


def consumer_config(kafka: KafkaSettings, config: RuntimeConfig) -> dict[str, Any]:
    s = config.settings
    return {
        "bootstrap_servers": [b.strip() for b in kafka.bootstrap_servers.split(",") if b.strip()],
        "client_id": client_id(config.sink),
        "group_id": config.group,
        # Offsets are committed by the runtime, only for what the sink durably wrote.
        "enable_auto_commit": False,
        "auto_offset_reset": s.auto_offset_reset,
        # A new topic that matches the pattern is found within this interval.
        "metadata_max_age_ms": s.metadata_max_age_ms,
        "max_poll_records": s.max_poll_records,
        # Heartbeats come from kafka-python's IO thread, so a short session is safe and lets the
        # partitions of a crashed (kill -9) consumer move on quickly.
        "session_timeout_ms": s.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, s.session_timeout_ms // 5),
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        # Topics are created explicitly (docs/architecture.md#topics); never by a consumer's metadata request.
        "allow_auto_create_topics": False,
        # Skip records of aborted producer transactions, should a publisher use them.
        "isolation_level": "read_committed",
        "bootstrap_timeout_ms": 10_000,
    }


def producer_config(kafka: KafkaSettings, sink: str) -> dict[str, Any]:
    """The DLQ producer: idempotent, acks=all, bounded blocking so a missing topic surfaces as an error."""
    return {
        "bootstrap_servers": [b.strip() for b in kafka.bootstrap_servers.split(",") if b.strip()],
        "client_id": client_id(sink) + "-dlq",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_block_ms": 10_000,
        "request_timeout_ms": 15_000,
        # A DLQ record is its original plus up to ~10 KB of error headers.
        "max_request_size": 2 * 1024 * 1024,
    }


def topic_ids(kafka: KafkaSettings, topics: set[str]) -> dict[str, str]:
    """Each topic's id on the cluster (a topic deleted and re-created under its name gets a new one)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=[b.strip() for b in kafka.bootstrap_servers.split(",") if b.strip()],
        client_id="crawlstore-topic-ids",
        request_timeout_ms=10_000,
    )
    try:
        described = admin.describe_topics(sorted(topics))
    finally:
        admin.close()
    unknown = {"", "None", "00000000-0000-0000-0000-000000000000"}  # brokers too old to have ids
    found = [d for d in described if d.get("error_code") == 0 and str(d.get("topic_id")) not in unknown]
    return {d["name"]: str(d["topic_id"]) for d in found}

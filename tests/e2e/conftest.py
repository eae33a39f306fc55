"""Reading exactly what a run added to a topic: end offsets before, everything after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition


class TopicWindow:
    """The records appended to `topic` after the window was opened."""

    def __init__(self, servers: str, topic: str) -> None:
        self.servers, self.topic = servers, topic
        self.consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        self.partitions = [
            TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        self.start = self.consumer.end_offsets(self.partitions)

    def read(self) -> list[Any]:
        end = self.consumer.end_offsets(self.partitions)
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            self.consumer.seek(tp, self.start[tp])
        out: list[Any] = []
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            for batch in self.consumer.poll(timeout_ms=1000).values():
                out.extend(m for m in batch if m.offset < end[TopicPartition(m.topic, m.partition)])
        return out

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topic_window(stack_env: dict[str, str]) -> Iterator[Any]:
    windows: list[TopicWindow] = []

    def open_window(topic: str) -> TopicWindow:
        windows.append(TopicWindow(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topic))
        return windows[-1]

    yield open_window
    for w in windows:
        w.close()


@pytest.fixture(scope="session")
def dagbag(stack_env: dict[str, str]) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(os.path.join(os.path.dirname(__file__), "..", "..", "airflow", "dags"))
    assert bag.import_errors == {}
    return bag

"""The contract between the consumer runtime and a store, after Kafka Connect's SinkTask.

Lifecycle: start → open(partitions) → [prepare(batch) → put(batch) → flush(batch)]* →
close(partitions) → stop.
As in Connect, put hands the batch to the store (staged in an open transaction or a temp file, or
already durable when replays are no-ops) and flush makes it durable together with the batch's
offsets; then the runtime commits those offsets to Kafka. Between put and flush the runtime
produces the batch's dead letters, so offsets never move past a record that is neither stored nor
dead-lettered. How each store lands a record exactly once: docs/architecture.md#exactly-once-per-sink.

Errors: raise TransientError to be retried (the runtime calls abort() first), return per-record
rejections from put() for records the store refused, raise FatalError to stop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping

from kafka.structs import TopicPartition

from consumers.batching import Batch, Rejection


class SinkTask(ABC):
    name: str = "sink"

    def start(self) -> None:
        """Connect and create what the store needs (tables, templates); TransientError if it is down."""
        return None  # optional hook: nothing to do by default

    @abstractmethod
    def open(
        self,
        partitions: Collection[TopicPartition],
        committed: Mapping[TopicPartition, int | None],
        topic_ids: Mapping[str, str] | None = None,
    ) -> dict[TopicPartition, int]:
        """Take over partitions; returns the offset to resume each one from, when the store knows it.

        `committed` are Kafka's committed offsets of the group; partitions missing from the result
        resume from there. `topic_ids` are the topics' ids on the cluster, when known: a store that
        keeps its own offsets keeps the id beside them, and when a topic was deleted and re-created
        (a new id) says so and resumes its new log from the start.
        """

    def prepare(self, batch: Batch) -> None:
        """Optionally encode the batch for the store ahead of put(), into `batch.prepared`.

        Runs on the polling thread while the previous batch is still being written on the writer
        thread, so it must not touch the store's connection. put() must work without it too.
        """
        return None  # optional hook: put() encodes by itself

    @abstractmethod
    def put(self, batch: Batch) -> list[Rejection]:
        """Stage the batch's items; returns the records the store refused (they go to the DLQ)."""

    @abstractmethod
    def flush(self, batch: Batch) -> None:
        """Make the staged items and the batch's next offsets durable."""

    def abort(self) -> None:
        """Drop whatever put() staged (after an error, before a retry)."""
        return None  # optional hook: nothing to do by default

    def stored_offsets(self, partition: TopicPartition, offsets: Collection[int]) -> set[int]:
        """Which of these offsets of `partition` the store already holds, written by anyone.

        Only a store where writing a record twice leaves two copies needs to say (a replay asks
        before writing dead letters back); where a rewrite is a no-op the answer is "none".
        """
        return set()

    def close(self, partitions: Collection[TopicPartition]) -> None:
        """Give partitions up (rebalance or shutdown); nothing of them is staged any more."""
        return None  # optional hook: nothing to do by default

    def stop(self) -> None:
        """Release connections."""
        return None  # optional hook: nothing to do by default

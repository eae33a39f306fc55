"""How a batch becomes durable and committed: the writer thread, retries, Kafka commits.

One batch at a time is written by the writer thread while the main thread polls, decodes and
prepares (encodes for the store) the next one, so the writer mostly waits on the store and Python
and the store work side by side. Strictly one in flight: a batch is handed over only after the
previous one is committed, so per-partition order, offsets and the breaker stay sequential.
Retries run on the main thread, which pauses every partition and keeps polling (SinkLoop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.batching import Batch, Rejection
from consumers.breaker import DeadLetterBreaker
from consumers.deadletters import DeadLetterProducer
from consumers.errors import CircuitOpen, Fenced, TransientError
from consumers.kafka_config import producer_config
from consumers.metrics import ConsumerMetrics
from consumers.retry import Backoff
from consumers.settings import RuntimeConfig
from consumers.sink import SinkTask
from consumers.write import write_batch
from crawlstore.settings import KafkaSettings

log = logging.getLogger(__name__)


def describe(partitions: Collection[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"


class BatchFlushing:
    """The flushing half of the sink loop; SinkLoop supplies polling while paused and reporting."""

    def __init__(self, sink: SinkTask, config: RuntimeConfig, kafka: KafkaSettings) -> None:
        self.sink = sink
        self.config = config
        self.kafka = kafka
        s = config.settings
        self.breaker = DeadLetterBreaker(
            s.dlq_max_consecutive, s.dlq_max_ratio, s.dlq_window, s.dlq_min_records
        )
        self.metrics = ConsumerMetrics(sink.name, config.group)
        self.dlq = DeadLetterProducer(producer_config(kafka, config.sink), connector=sink.name)
        self.consumer: KafkaConsumer | None = None
        self.batch = Batch()
        self.durable_next: dict[TopicPartition, int] = {}
        self._retrying = False
        self._pending: Batch | None = None  # the batch being retried on the main thread
        self._inflight: tuple[Batch, Future[tuple[list[Rejection], list[bool]]], float] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")

    # ------------------------------------------------------------------ supplied by SinkLoop

    def _wait_paused(self, seconds: float) -> bool:
        """Wait, polling with every partition paused; False when the stop deadline passed."""
        raise NotImplementedError

    def _resume(self) -> None:
        raise NotImplementedError

    def _reopen(self, fenced: Fenced, batch: Batch) -> None:
        """Drop what this consumer holds of fenced partitions (`batch` and the one filling) and open
        them again."""
        raise NotImplementedError

    def _tick(self, now: float, force: bool = False) -> None:
        raise NotImplementedError

    def _backoff(self) -> Backoff:
        s = self.config.settings
        return Backoff(s.retry_initial_ms / 1000, s.retry_max_ms / 1000)

    # ------------------------------------------------------------------ flushing

    def _prepare(self) -> None:
        """Let the sink encode the due batch here, while the writer thread still writes the last one.

        With one writer thread, everything the writer does that is not waiting for the store
        delays the store; encoding on this thread overlaps it with the previous write.
        """
        if self.batch.prepared is not None or not self.batch.items:
            return
        try:
            self.sink.prepare(self.batch)
        except Exception:  # put() encodes by itself and reports what is wrong with the records
            log.exception("%s: preparing a batch failed; put() encodes it instead", self.sink.name)
            self.batch.prepared = None

    def _submit(self) -> None:
        """Hand the current batch to the writer thread (the previous one is settled)."""
        assert self._inflight is None
        batch, self.batch = self.batch, Batch()
        if len(batch):
            self._inflight = (batch, self._writer.submit(self._attempt, batch), time.monotonic())

    def _reap(self) -> None:
        """Commit the in-flight batch if it is done, without waiting."""
        if self._inflight is not None and self._inflight[1].done():
            self._settle(patient=True)

    def _settle(self, patient: bool) -> bool:
        """Wait for the in-flight batch; commit it, or retry it here (patient) or give it up.

        Returns whether nothing is left in flight uncommitted.
        """
        if self._inflight is None:
            return True
        batch, future, started = self._inflight
        try:
            attempt = future.result()
        except TransientError as exc:
            self._inflight = None
            return self._retry(batch, exc, patient, started)
        except BaseException:
            self._inflight = None
            raise
        self._inflight = None
        self._committed(batch, attempt, 0, time.monotonic() - started)
        return True

    def _flush_current(self, patient: bool) -> bool:
        """Settle the in-flight batch, then write the buffered one on this thread."""
        if not self._settle(patient):
            return False
        if not len(self.batch):
            return True
        batch, started = self.batch, time.monotonic()
        try:
            attempt = self._attempt(batch)
        except TransientError as exc:
            if not patient:
                log.warning(
                    "%s: %d records of %s not flushed: %s",
                    self.sink.name,
                    len(batch),
                    describe(batch.ranges),
                    exc,
                )
                return False
            self.batch = Batch()
            return self._retry(batch, exc, patient, started)
        self.batch = Batch()
        self._committed(batch, attempt, 0, time.monotonic() - started)
        return True

    def _attempt(self, batch: Batch) -> tuple[list[Rejection], list[bool]]:
        """The one write step (consumers.write), with the breaker as its check."""
        return write_batch(self.sink, batch, self.dlq.send, check=self._check_breaker)

    def _check_breaker(self, outcomes: list[bool], rejections: list[Rejection]) -> None:
        reason = self.breaker.check(outcomes)
        if reason:
            last = rejections[-1]
            error = f"{type(last.error).__name__}: {str(last.error)[:300]}"
            raise CircuitOpen(f"{reason}; last: {last.record.where} {error}")

    def _retry(self, batch: Batch, error: TransientError, patient: bool, started: float) -> bool:
        """Retry a batch with backoff while every partition is paused (and polled); never dead-letter it.

        Returns False when giving up: not patient (inside a rebalance) or past the stop deadline.
        """
        if not patient:
            log.warning(
                "%s%s: %d records of %s not written: %s",
                "FENCED: " if isinstance(error, Fenced) else "",
                self.sink.name,
                len(batch),
                describe(batch.ranges),
                error,
            )
            self._rewind(batch)
            return False
        backoff = self._backoff()
        self._retrying, self._pending = True, batch
        try:
            while True:
                if isinstance(error, Fenced):
                    self._reopen(error, batch)
                    if not len(batch):
                        return True
                delay = backoff.next_delay()
                self.metrics.add(retries=1)
                self.metrics.set_state("retrying", f"{type(error).__name__}: {str(error)[:200]}")
                log.warning(
                    "%s: batch of %d records (%s) not written, retry #%d in %.1fs: %s",
                    self.sink.name,
                    len(batch),
                    self._where(batch),
                    backoff.attempts,
                    delay,
                    error,
                )
                if not self._wait_paused(delay):
                    self._rewind(batch)
                    return False
                if not len(batch):  # every partition of it was revoked meanwhile
                    return True
                try:
                    attempt = self._attempt(batch)
                except TransientError as exc:
                    error = exc
                    continue
                self._committed(batch, attempt, backoff.attempts, time.monotonic() - started)
                return True
        finally:
            self._retrying, self._pending = False, None
            self._resume()

    def _rewind(self, batch: Batch) -> None:
        """Records given up on but of partitions still owned: read them again from the durable offset."""
        if self.consumer is None:
            return
        assigned = self.consumer.assignment()
        for tp in batch.ranges:
            if tp in assigned and tp in self.durable_next:
                self.consumer.seek(tp, self.durable_next[tp])

    @staticmethod
    def _where(batch: Batch) -> str:
        return ", ".join(
            f"{tp.topic}[{tp.partition}]@{r.first}-{r.last}" for tp, r in sorted(batch.ranges.items())
        )

    def _committed(
        self, batch: Batch, attempt: tuple[list[Rejection], list[bool]], retries: int, seconds: float
    ) -> None:
        refused, outcomes = attempt
        offsets = batch.next_offsets()
        self.durable_next.update(offsets)
        self.breaker.record(outcomes)
        dead = len(batch.rejected) + len(refused)
        written = len(batch.items) - len(refused)
        self.metrics.add(written=written, dead_lettered=dead, batches=1)
        self._commit_kafka(offsets)
        log.debug(
            "%s: %d written, %d dead-lettered (%s) in %.3fs",
            self.sink.name,
            written,
            dead,
            self._where(batch),
            seconds,
        )
        if retries:
            log.info(
                "%s: store is back; batch (%s) written after %d retries",
                self.sink.name,
                self._where(batch),
                retries,
            )
        self.metrics.set_state("consuming")
        self._tick(time.monotonic(), force=True)

    def _commit_kafka(self, offsets: dict[TopicPartition, int], sync: bool = False) -> None:
        """Commit durable offsets to Kafka: the truth for OpenSearch, lag visibility for the others."""
        if self.consumer is None:
            return
        assigned = self.consumer.assignment()
        payload = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items() if tp in assigned}
        if not payload:
            return
        try:
            if sync:
                self.consumer.commit(payload, timeout_ms=5000)
            else:
                self.consumer.commit_async(payload, callback=self._on_commit)
        except KafkaError as exc:
            log.warning(
                "Kafka offset commit failed (the store holds the truth, records may be re-read): %r", exc
            )

    @staticmethod
    def _on_commit(offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            log.warning("Kafka offset commit failed (records may be re-read, harmlessly): %r", response)

    def _close_writer(self) -> None:
        if self._inflight is not None:
            # Fatal path: the in-flight write may still land; it is not committed to Kafka, so at
            # worst it is written again (a no-op) by the next owner.
            self._inflight[1].cancel()
        self._writer.shutdown(wait=True)
        self._inflight = None

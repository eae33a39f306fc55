"""The consumer runtime the three sinks share: poll, batch, put, dead-letter, flush, commit, retry.

One process = one KafkaConsumer in the sink's group, subscribed by topic list or regex pattern
(metadata is refreshed every few seconds, so a new matching topic is picked up), polling forever:
an idle topic never ends the loop. Offsets are committed only after the sink made a batch durable.

Threads: kafka-python 3 runs its network loop (heartbeats, rebalances) on its own IO thread and
calls the rebalance listener there, while the main thread is blocked inside poll() or close().
So the listener may touch the runtime's state, but must not call blocking consumer APIs.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from types import FrameType
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumers.batching import Batch, BatchPolicy, Decoded, Rejection
from consumers.breaker import DeadLetterBreaker
from consumers.deadletters import DeadLetterProducer, DeliveryFailed
from consumers.endpoint import MetricsEndpoint
from consumers.errors import CircuitOpen, FatalError, TransientError
from consumers.kafka_config import consumer_config, producer_config
from consumers.metrics import ConsumerMetrics
from consumers.retry import Backoff
from consumers.settings import RuntimeConfig
from consumers.sink import SinkTask
from crawlstore.dlq import STAGE_DESERIALIZE
from crawlstore.messages import Record, RecordRejected, decode_item
from crawlstore.settings import KafkaSettings
from crawlstore.topics import DLQ_SUFFIX

log = logging.getLogger(__name__)

POLL_MS = 500  # upper bound of one poll: how quickly a stop signal or a due batch is noticed
EXIT_OK, EXIT_CONFIG, EXIT_FATAL, EXIT_CIRCUIT_OPEN = 0, 1, 2, 3
_header_value = itemgetter(1)


def describe(partitions: Collection[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"


def to_record(cr: ConsumerRecord) -> Record:
    headers = tuple(cr.headers) if cr.headers else ()
    if not all(map(_header_value, headers)):  # rare: a null (or empty) value; nulls become b""
        headers = tuple((k, v if v is not None else b"") for k, v in headers)
    return Record(cr.topic, cr.partition, cr.offset, cr.key, cr.value, cr.timestamp, headers)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no stubs
    """Forwards rebalances to the runtime (called on kafka-python's IO thread)."""

    def __init__(self, runtime: ConsumerRuntime) -> None:
        self.runtime = runtime

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.runtime.on_revoked(set(revoked), lost=False)

    def on_partitions_lost(self, lost: Any) -> None:
        self.runtime.on_revoked(set(lost), lost=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.runtime.on_assigned(set(assigned))


class ConsumerRuntime:
    """Runs one sink: `run()` returns the process exit code."""

    def __init__(self, sink: SinkTask, config: RuntimeConfig, kafka: KafkaSettings) -> None:
        self.sink = sink
        self.config = config
        self.kafka = kafka
        s = config.settings
        self.policy = BatchPolicy(
            config.batch_max_records, config.batch_max_bytes, config.batch_max_wait_s, config.batch_idle_s
        )
        self.breaker = DeadLetterBreaker(
            s.dlq_max_consecutive, s.dlq_max_ratio, s.dlq_window, s.dlq_min_records
        )
        self.metrics = ConsumerMetrics(sink.name, config.group)
        self.dlq = DeadLetterProducer(producer_config(kafka, config.sink), connector=sink.name)
        self.consumer: KafkaConsumer | None = None
        self.batch = Batch()
        self.opened: set[TopicPartition] = set()
        self.pending_open: set[TopicPartition] = set()
        self.durable_next: dict[TopicPartition, int] = {}
        self.stop_requested = False
        self._stop_deadline = math.inf
        self._retrying = False
        self._pending: Batch | None = None  # the batch being retried on the main thread
        self._inflight: tuple[Batch, Future[tuple[list[Rejection], list[bool]]], float] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")
        self._closing = False
        self._fatal: BaseException | None = None
        self._started_at = time.monotonic()
        self._last_tick = 0.0
        self._last_progress = time.monotonic()
        self._last_assignment_warning = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        try:
            endpoint = MetricsEndpoint(self.config.metrics_host, self.config.metrics_port, self.metrics)
        except OSError as exc:
            log.error(
                "cannot serve /health and /metrics on %s:%d: %s",
                self.config.metrics_host,
                self.config.metrics_port,
                exc,
            )
            return EXIT_CONFIG
        endpoint.start()
        self._install_signal_handlers()
        code = EXIT_OK
        try:
            self._start_sink()
            self._connect()
            if not self.stop_requested:
                self._subscribe()
                self._loop()
                self._drain()
        except CircuitOpen as exc:
            log.error(
                "CIRCUIT BREAKER OPEN, %s consumer stops: %s. Nothing of the current batch was "
                "committed; fix the cause, then restart (or replay the DLQ).",
                self.sink.name,
                exc,
            )
            code = EXIT_CIRCUIT_OPEN
        except FatalError as exc:
            log.error("%s consumer stops: %s", self.sink.name, exc)
            code = EXIT_FATAL
        except Exception:
            log.exception("%s consumer crashed", self.sink.name)
            code = EXIT_FATAL
        finally:
            self._shutdown(code)
            endpoint.stop()
        return code

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self._stop_deadline = time.monotonic() + self.config.settings.shutdown_timeout_s
            log.info(
                "%s: stopping (flush and commit within %.0fs)",
                reason,
                self.config.settings.shutdown_timeout_s,
            )

    def _install_signal_handlers(self) -> None:
        first_at = 0.0

        def handler(signum: int, frame: FrameType | None) -> None:
            nonlocal first_at
            name = signal.Signals(signum).name
            now = time.monotonic()
            if not self.stop_requested:
                first_at = now
                self.request_stop(f"{name} received")
            # A signal sent to the process and to its group arrives twice at once: that is not
            # an operator insisting. A second one later means "now".
            elif now - first_at > 1.0:
                log.warning("%s received again: exiting now without flushing", name)
                os._exit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _backoff(self) -> Backoff:
        s = self.config.settings
        return Backoff(s.retry_initial_ms / 1000, s.retry_max_ms / 1000)

    def _sleep(self, seconds: float) -> None:
        """Sleep before there is a group to stay in; wakes up early on stop."""
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _start_sink(self) -> None:
        backoff = self._backoff()
        while not self.stop_requested:
            try:
                self.sink.start()
                return
            except TransientError as exc:
                delay = backoff.next_delay()
                log.warning("%s store not available yet, retry in %.1fs: %s", self.sink.name, delay, exc)
                self.metrics.set_state("starting", f"store unavailable: {exc}")
                self._sleep(delay)

    def _connect(self) -> None:
        backoff = self._backoff()
        while not self.stop_requested:
            try:
                self.consumer = KafkaConsumer(**consumer_config(self.kafka, self.config))
                return
            except KafkaError as exc:
                delay = backoff.next_delay()
                log.warning(
                    "Kafka %s not reachable, retry in %.1fs: %r", self.kafka.bootstrap_servers, delay, exc
                )
                self.metrics.set_state("starting", f"Kafka unreachable: {exc!r}")
                self._sleep(delay)

    def _subscribe(self) -> None:
        assert self.consumer is not None
        listener = _Listener(self)
        if self.config.topics:
            self.consumer.subscribe(topics=list(self.config.topics), listener=listener)
            what = f"topics {', '.join(self.config.topics)}"
        else:
            self.consumer.subscribe(pattern=self.config.topic_pattern, listener=listener)
            what = f"topic pattern /{self.config.topic_pattern}/"
        log.info(
            "%s consumer: group %s subscribed to %s (subscription: %s)",
            self.sink.name,
            self.config.group,
            what,
            self.consumer.subscription(),
        )

    def _loop(self) -> None:
        assert self.consumer is not None
        while not self.stop_requested:
            self._raise_fatal()
            self._reap()
            if self.pending_open:
                self._settle(patient=True)  # the sink is not used by two threads at once
                self._open_pending()
                continue
            now = time.monotonic()
            until_due = self.policy.seconds_until_due(self.batch, now)
            timeout_ms = POLL_MS if until_due is None else max(1, min(POLL_MS, int(until_due * 1000)))
            if self._inflight is not None:
                timeout_ms = min(timeout_ms, 50)  # commit the in-flight batch soon after it lands
            polled = self._poll(timeout_ms, self.policy.room(self.batch))
            self._raise_fatal()
            now = time.monotonic()
            self._accept(polled, now)
            reason = self.policy.due(self.batch, now)
            if reason:
                log.debug("batch of %d records due (%s)", len(self.batch), reason)
                self._prepare()
                if self._settle(patient=True):
                    self._submit()
            self._tick(now)

    def _drain(self) -> None:
        """Graceful stop: finish the in-flight batch, flush what is buffered, commit; within the deadline."""
        self.metrics.set_state("stopping")
        if len(self.batch) or self._inflight is not None:
            log.info("flushing %d buffered records before stopping", len(self.batch))
        if not self._flush_current(patient=True):
            log.warning(
                "%d records not flushed before the deadline; they will be consumed again", len(self.batch)
            )
        self._commit_kafka(dict(self.durable_next), sync=True)

    def _shutdown(self, code: int) -> None:
        self._closing = True
        if self._inflight is not None:
            # Fatal path: the in-flight write may still land; it is not committed to Kafka, so at
            # worst it is written again (a no-op) by the next owner.
            self._inflight[1].cancel()
        self._writer.shutdown(wait=True)
        self._inflight = None
        if self.consumer is not None:
            # Closing cancels the client's pending metadata refresh, which it logs as an ERROR.
            logging.getLogger("kafka.cluster").setLevel(logging.CRITICAL)
            try:
                # Leaving the group (rather than timing out of it) hands partitions over at once.
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception:
                log.exception("closing the Kafka consumer failed")
        try:
            self.dlq.close()
        except Exception:
            log.exception("closing the DLQ producer failed")
        try:
            self.sink.stop()
        except Exception:
            log.exception("stopping the %s sink failed", self.sink.name)
        self.metrics.set_partitions(0, {})
        self.metrics.set_state("stopped" if code == EXIT_OK else "failed")
        m = self.metrics
        log.info(
            "%s consumer stopped (exit %d): consumed=%d written=%d dead_lettered=%d retries=%d",
            self.sink.name,
            code,
            m.consumed,
            m.written,
            m.dead_lettered,
            m.retries,
        )

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            exc, self._fatal = self._fatal, None
            if isinstance(exc, FatalError):
                raise exc
            raise FatalError(f"rebalance handling failed: {exc!r}") from exc

    # ------------------------------------------------------------------ polling

    def _poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        assert self.consumer is not None
        try:
            polled: dict[TopicPartition, list[ConsumerRecord]] = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=max_records
            )
            return polled
        except KafkaError as exc:
            # The client reconnects by itself; an error here is worth a line, not a crash.
            log.warning("poll failed, retrying: %r", exc)
            time.sleep(min(1.0, timeout_ms / 1000))
            return {}

    def _accept(self, polled: dict[TopicPartition, list[ConsumerRecord]], now: float) -> None:
        for tp, records in polled.items():
            if tp not in self.opened:
                # Cannot happen (new partitions stay paused until opened); dropping is safe
                # because opening seeks the partition explicitly.
                log.warning(
                    "ignoring %d records of %s: partition not opened yet", len(records), describe([tp])
                )
                continue
            self.durable_next.setdefault(tp, records[0].offset)
            for cr in records:
                record = to_record(cr)
                try:
                    item = decode_item(record)
                except RecordRejected as exc:
                    log.warning("%s: %s (%s): to the DLQ", record.where, exc.kind, exc)
                    self.batch.add_rejected(Rejection(record, exc, STAGE_DESERIALIZE), now)
                except (
                    Exception
                ) as exc:  # e.g. RecursionError on absurdly nested JSON: still this record's fault
                    log.warning("%s: undecodable (%r): to the DLQ", record.where, exc)
                    error = RecordRejected("undecodable", f"{type(exc).__name__}: {exc}")
                    self.batch.add_rejected(Rejection(record, error, STAGE_DESERIALIZE), now)
                else:
                    self.batch.add_item(Decoded(record, item), now)
            self.metrics.add(consumed=len(records))

    # ------------------------------------------------------------------ partitions

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """IO thread: keep new partitions paused until the sink opened them (main thread)."""
        assert self.consumer is not None
        if not assigned:
            return
        log.info("partitions assigned: %s", describe(assigned))
        dlq = {tp for tp in assigned if tp.topic.endswith(DLQ_SUFFIX)}
        if dlq:
            self._fatal = FatalError(f"dead-letter topic assigned ({describe(dlq)}): fix the topic pattern")
        self.consumer.pause(*assigned)
        self.pending_open |= assigned

    def on_revoked(self, revoked: set[TopicPartition], lost: bool) -> None:
        """IO thread: flush and commit what is buffered for the partitions before giving them up.

        The in-flight batch is waited for (the writer thread may be mid-write); then one attempt
        for the buffered records, no backoff: blocking here blocks heartbeats. Records that cannot
        be flushed are dropped; the next owner reads them again from the last durable offset.
        """
        if not revoked:
            return
        log.info("partitions %s: %s", "lost" if lost else "revoked", describe(revoked))
        try:
            if self._pending is not None:  # the main thread is retrying it (inside poll): drop, no flush
                self._pending.drop_partitions(revoked)
            flushed = False
            if not (lost or self._retrying or self._closing or self._fatal):
                flushed = self._flush_current(patient=False)
            else:
                self._settle(patient=False)
            if not flushed and set(self.batch.ranges) & revoked:
                dropped = self.batch.drop_partitions(revoked)
                log.warning(
                    "%d buffered records of %s dropped; the next owner consumes them again",
                    dropped,
                    describe(revoked),
                )
            self.sink.close(revoked)
        except Exception as exc:
            log.exception("handling the revocation of %s failed", describe(revoked))
            self._fatal = exc
        finally:
            self.opened -= revoked
            self.pending_open -= revoked
            for tp in revoked:
                self.durable_next.pop(tp, None)

    def _open_pending(self) -> None:
        """Open newly assigned partitions in the sink and seek to where the sink says they resume."""
        assert self.consumer is not None
        backoff = self._backoff()
        while self.pending_open and not self.stop_requested:
            assigned = set(self.consumer.assignment())
            self.pending_open &= assigned
            tps = sorted(self.pending_open)
            if not tps:
                return
            try:
                committed = {tp: self.consumer.committed(tp, timeout_ms=10_000) for tp in tps}
                start = self.sink.open(tps, committed)
            except (TransientError, KafkaError) as exc:
                delay = backoff.next_delay()
                log.warning("cannot open %s yet, retry in %.1fs: %s", describe(tps), delay, exc)
                self.metrics.add(retries=1)
                self.metrics.set_state("retrying", f"opening partitions: {exc}")
                if not self._wait_paused(delay):
                    return
                continue
            if not set(tps) <= set(self.consumer.assignment()):
                continue  # a rebalance happened meanwhile; open the new assignment instead
            resume_at: dict[TopicPartition, int | None] = {}
            for tp in tps:
                offset = start.get(tp, committed.get(tp))
                if offset is not None:
                    self.consumer.seek(tp, offset)
                else:
                    # No stored offset: auto_offset_reset decides; ask where that is, for lag metrics.
                    offset = self._position(tp)
                if offset is not None:
                    self.durable_next[tp] = offset
                resume_at[tp] = offset
            self.opened |= set(tps)
            self.pending_open -= set(tps)
            # Everything opened resumes, not only these: a retry above paused all partitions.
            self._resume()
            log.info(
                "opened %s; resuming at %s",
                describe(tps),
                ", ".join(
                    f"{tp.topic}[{tp.partition}]@{'reset' if o is None else o}" for tp, o in resume_at.items()
                ),
            )
            self.metrics.set_state("consuming")
            self._tick(time.monotonic(), force=True)

    def _position(self, tp: TopicPartition) -> int | None:
        assert self.consumer is not None
        try:
            position: int | None = self.consumer.position(tp, timeout_ms=5000)
            return position
        except KafkaError as exc:
            log.debug("no position for %s yet: %r", describe([tp]), exc)
            return None

    def _wait_paused(self, seconds: float) -> bool:
        """Wait with every partition paused while polling, so the group keeps this member.

        Returns False when the stop deadline passed (give up), True otherwise.
        """
        assert self.consumer is not None
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self.stop_requested and now >= self._stop_deadline:
                return False
            if now >= end:
                return True
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(*assigned)
            polled = self._poll(max(1, min(POLL_MS, int((end - now) * 1000))), 1)
            if polled:  # not expected with everything paused; keep them rather than lose them
                self._accept(polled, time.monotonic())
            self._tick(time.monotonic())

    def _resume(self) -> None:
        assert self.consumer is not None
        ready = self.opened & set(self.consumer.assignment())
        if ready:
            self.consumer.resume(*ready)

    # ------------------------------------------------------------------ flushing
    #
    # One batch at a time is written by the writer thread while the main thread polls, decodes
    # and prepares (encodes for the store) the next one, so the writer mostly waits on the store
    # and Python and the store work side by side. Strictly one in flight: a batch is
    # handed over only after the previous one is committed, so per-partition order, offsets and
    # the breaker stay sequential. Retries run on the main thread, which pauses and keeps polling.

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
        """put → breaker → dead letters → flush, once. On any error the sink's staging is aborted."""
        try:
            refused = self.sink.put(batch)
            outcomes = batch.outcomes(refused)
            rejections = batch.rejected + refused
            reason = self.breaker.check(outcomes)
            if reason:
                last = rejections[-1]
                error = f"{type(last.error).__name__}: {str(last.error)[:300]}"
                raise CircuitOpen(f"{reason}; last: {last.record.where} {error}")
            todo = [r for r in rejections if r.source not in batch.dead_lettered]
            try:
                batch.dead_lettered |= self.dlq.send(todo)
            except DeliveryFailed as exc:
                batch.dead_lettered |= exc.acked
                raise
            self.sink.flush(batch)
        except BaseException:
            self._abort()
            raise
        return refused, outcomes

    def _retry(self, batch: Batch, error: TransientError, patient: bool, started: float) -> bool:
        """Retry a batch with backoff while every partition is paused (and polled); never dead-letter it.

        Returns False when giving up: not patient (inside a rebalance) or past the stop deadline.
        """
        if not patient:
            log.warning(
                "%s: %d records of %s not written: %s",
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

    def _abort(self) -> None:
        try:
            self.sink.abort()
        except Exception:
            log.exception(
                "%s: abort failed (ignored; staged data is cleaned up on the next open)", self.sink.name
            )

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

    # ------------------------------------------------------------------ reporting

    def _tick(self, now: float, force: bool = False) -> None:
        if not force and now - self._last_tick < 1.0:
            return
        self._last_tick = now
        assert self.consumer is not None
        lag: dict[tuple[str, int], int] = {}
        for tp in self.opened:
            try:
                high = self.consumer.highwater(tp)
            except KafkaError:
                continue
            start = self.durable_next.get(tp)
            if high is not None and start is not None:
                lag[(tp.topic, tp.partition)] = max(0, high - start)
        self.metrics.set_partitions(len(self.opened), lag)
        self.metrics.sample_rate(now)
        if now - self._last_progress >= self.config.settings.progress_interval_s:
            self._last_progress = now
            m = self.metrics
            log.info(
                "progress: consumed=%d written=%d dead_lettered=%d retries=%d rate=%.1f/s lag=%d "
                "partitions=%s dlq_ratio=%.3f",
                m.consumed,
                m.written,
                m.dead_lettered,
                m.retries,
                m.rate(),
                m.total_lag(),
                describe(self.opened),
                self.breaker.ratio,
            )
        if not self.opened and not self.pending_open and now - self._last_assignment_warning > 60:
            self._last_assignment_warning = now
            log.warning(
                "no partitions assigned after %.0fs: no topic matches %s, or the group %s has more "
                "members than partitions",
                now - self._started_at,
                self.config.topics or f"/{self.config.topic_pattern}/",
                self.config.group,
            )

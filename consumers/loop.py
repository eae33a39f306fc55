"""The sink loop: poll, decode, batch, hand due batches to the flushing half, follow rebalances.

One process = one KafkaConsumer in the sink's group, subscribed by topic list or regex pattern
(metadata is refreshed every few seconds, so a new matching topic is picked up), polling forever:
an idle topic never ends the loop. Offsets are committed only after the sink made a batch durable
(consumers.flushing). The process around it (signals, connections, exit codes): consumers.runtime.

Threads: kafka-python 3 runs its network loop (heartbeats, rebalances) on its own IO thread and
calls the rebalance listener there, while the main thread is blocked inside poll() or close().
So the listener may touch the loop's state, but must not call blocking consumer APIs.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from consumers.batching import Batch, BatchPolicy, Decoded, decode, to_record
from consumers.errors import FatalError, Fenced, TransientError
from consumers.flushing import BatchFlushing, describe
from consumers.kafka_config import topic_ids
from consumers.settings import RuntimeConfig
from consumers.sink import SinkTask
from crawlstore.init import create_topics
from crawlstore.settings import KafkaSettings
from crawlstore.topics import DLQ_SUFFIX, pipeline_topics, twin_specs

log = logging.getLogger(__name__)

POLL_MS = 500  # upper bound of one poll: how quickly a stop signal or a due batch is noticed


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no stubs
    """Forwards rebalances to the loop (called on kafka-python's IO thread)."""

    def __init__(self, runtime: SinkLoop) -> None:
        self.runtime = runtime

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.runtime.on_revoked(set(revoked), lost=False)

    def on_partitions_lost(self, lost: Any) -> None:
        self.runtime.on_revoked(set(lost), lost=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.runtime.on_assigned(set(assigned))


class SinkLoop(BatchFlushing):
    """One sink's consume loop; ConsumerRuntime runs it in a process."""

    def __init__(self, sink: SinkTask, config: RuntimeConfig, kafka: KafkaSettings) -> None:
        super().__init__(sink, config, kafka)
        self.policy = BatchPolicy(
            config.batch_max_records, config.batch_max_bytes, config.batch_max_wait_s, config.batch_idle_s
        )
        self.opened: set[TopicPartition] = set()
        self.pending_open: set[TopicPartition] = set()
        self._twins_ready: set[str] = set()
        self.stop_requested = False
        self._stop_deadline = math.inf
        self._closing = False
        self._fatal: BaseException | None = None
        self._started_at = time.monotonic()
        self._last_tick = 0.0
        self._last_progress = time.monotonic()
        self._last_assignment_warning = time.monotonic()

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self._stop_deadline = time.monotonic() + self.config.settings.shutdown_timeout_s
            log.info(
                "%s: stopping (flush and commit within %.0fs)",
                reason,
                self.config.settings.shutdown_timeout_s,
            )

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

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            exc, self._fatal = self._fatal, None
            if isinstance(exc, FatalError):
                raise exc
            raise FatalError(f"rebalance handling failed: {exc!r}") from exc

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
                entry = decode(to_record(cr))
                if isinstance(entry, Decoded):
                    self.batch.add_item(entry, now)
                else:
                    kind = getattr(entry.error, "kind", "rejected")
                    log.warning("%s: %s (%s): to the DLQ", entry.record.where, kind, entry.error)
                    self.batch.add_rejected(entry, now)
            self.metrics.add(consumed=len(records))

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

    def _reopen(self, fenced: Fenced, batch: Batch) -> None:
        """The store says another consumer claimed these partitions after this one opened them
        (this one was frozen past its session timeout, say). Whatever is held of them is dropped
        unwritten, and those still assigned are opened again: claimed anew, resumed where the
        store says the other consumer stopped."""
        assert self.consumer is not None
        tps = set(fenced.partitions)
        dropped = batch.drop_partitions(tps) + self.batch.drop_partitions(tps)
        self.sink.close(tps & self.opened)
        self.opened -= tps
        for tp in tps:
            self.durable_next.pop(tp, None)
        log.warning("FENCED: %s. %d records of %s dropped unwritten", fenced, dropped, describe(tps))
        # A member that was frozen learns from its next heartbeats that it lost the partitions:
        # poll a few heartbeats first, so that it does not claim them back from their owner.
        self.consumer.pause(*(tps & set(self.consumer.assignment())))
        self._wait_paused(2 * max(1.0, self.config.settings.session_timeout_ms / 5000))
        again = tps & set(self.consumer.assignment())
        if again:
            self.consumer.pause(*again)
            self.pending_open |= again
            log.warning("%s still assigned here: opening again", describe(again))

    def _ensure_twins(self, topics: set[str]) -> None:
        """A topic joined by pattern that no source declares may lack its `-dlq` twins (init creates
        only the declared ones): create them, so that its dead letters have somewhere to go."""
        for topic in sorted(topics - self._twins_ready):
            if self.config.topic_pattern and topic not in pipeline_topics():
                created = create_topics(self.kafka, twin_specs(topic), timeout_s=10)
                if created:
                    log.warning(
                        "%s joined by pattern had no dead-letter twins: created %s", topic, ", ".join(created)
                    )
            self._twins_ready.add(topic)

    def _refuse_backwards(self, tps: list[TopicPartition], resume: dict[TopicPartition, int | None]) -> None:
        """Stop, saying why, when the sink would resume past the end of a partition's log: its
        offsets went backwards (topic deleted and re-created, log truncated), and reading on from
        the stored position would skip the new records without a word."""
        assert self.consumer is not None
        ends = self.consumer.end_offsets(tps)
        ahead = {
            tp: (o, ends[tp]) for tp, o in resume.items() if o is not None and tp in ends and o > ends[tp]
        }
        if ahead:
            where = ", ".join(
                f"{tp.topic}[{tp.partition}] resumes at {o} but ends at {end}"
                for tp, (o, end) in ahead.items()
            )
            raise FatalError(
                f"offsets went backwards: {where}. The topic was deleted and re-created, or its log "
                f"truncated; nothing was read. The {self.sink.name} sink's stored position belongs to the "
                "old log: move it aside (HDFS: the topic's committed files; PostgreSQL: its rows in "
                "kafka_offsets) to read the new log from its start, or consume it with a new group"
            )

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
                self._ensure_twins({tp.topic for tp in tps})
                committed = {tp: self.consumer.committed(tp, timeout_ms=10_000) for tp in tps}
                start = self.sink.open(tps, committed, topic_ids(self.kafka, {tp.topic for tp in tps}))
                self._refuse_backwards(tps, {tp: start.get(tp, committed.get(tp)) for tp in tps})
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

    def _pass_markers(self) -> None:
        """Count as durable the offsets that hold no record to consume: the markers a transactional
        publisher writes after each transaction, and records of aborted ones. They end every
        transactional partition, so without this the committed offset stays one short of the end
        (lag 1 for ever, in /metrics and in Kafka's view of the group)."""
        if self._inflight is not None or self.consumer is None:
            return
        # Records polled but not yet durable (a batch being retried) are no markers: never pass them.
        held = set(self.batch.ranges) | (set(self._pending.ranges) if self._pending is not None else set())
        passed = {}
        for tp in self.opened - held:
            durable, position = self.durable_next.get(tp), self._position(tp)
            if durable is not None and position is not None and position > durable:
                passed[tp] = position
        if passed:
            self.durable_next.update(passed)
            self._commit_kafka(passed)

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

    def _tick(self, now: float, force: bool = False) -> None:
        if not force and now - self._last_tick < 1.0:
            return
        self._last_tick = now
        assert self.consumer is not None
        self._pass_markers()
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

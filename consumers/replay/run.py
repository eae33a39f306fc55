"""One replay run: the topics' DLQs chunk by chunk, each letter back where it failed.

How a run picks records, resumes and avoids doing anything twice: the package's docstring.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka.structs import TopicPartition

from consumers.batching import Batch, Rejection, decode
from consumers.deadletters import DeadLetterProducer, DeliveryFailed
from consumers.kafka_config import producer_config
from consumers.replay.ledger import Ledger
from consumers.replay.letters import (
    ACTIONS,
    ALREADY_HANDLED,
    FAILED_AGAIN,
    FOREIGN_ORIGIN,
    NO_CONTEXT,
    OUT_OF_SCOPE,
    PARKED,
    REPLAYED,
    REPUBLISHED,
    UNKNOWN_CONNECTOR,
    Letter,
    Scoped,
    context_of,
)
from consumers.replay.reader import CHUNK_RECORDS, DlqReader, RateLimiter, reader_config
from consumers.replay.request import ReplayRequest
from consumers.replay.summary import ReplaySummary
from consumers.replay.writer import ReplayStopped, SinkWriter, build_replay_sink
from crawlstore.connectors import VALIDATE
from crawlstore.dlq import OURS, PREFIX, STAGE_VALIDATE, dead_letter, replay_headers
from crawlstore.messages import H_RUN_ID, OutgoingRecord, Record, encode_item
from crawlstore.producer import check_topics, pipeline_producer, produce_all
from crawlstore.settings import KafkaSettings, PostgresSettings
from crawlstore.topics import WEEK_MS, dlq_topic, parking_topic

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0
# Main topics delete records by timestamp after a week: a record re-published with an older crawl
# time could be gone before the sinks read it, so such records get the replay time instead (the
# item keeps its crawled_at, which is what the sinks order versions by).
REPUBLISH_MAX_AGE = timedelta(milliseconds=WEEK_MS) - timedelta(days=1)
__all__ = ["ReplayStopped", "replay", "stop_on_sigterm"]


@contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """An event SIGTERM sets, so a replay stops after its current chunk instead of mid-write.

    Airflow's own handler (it calls the operator's on_kill) still runs; Airflow kills the process
    a few seconds after SIGTERM anyway, and a run killed at any point is safe to rerun.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping after the current chunk")
        stop.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """One replay: the topics' DLQs, chunk by chunk; sinks, producers and ledger shared.

    Re-published messages go through the pipeline's producer (crawlstore.producer), dead letters
    that failed again through the consumers' DLQ producer (consumers.deadletters): one path each.
    """

    def __init__(
        self,
        *,
        request: ReplayRequest,
        summary: ReplaySummary,
        reader: DlqReader,
        ledger: Ledger,
        dlq: DeadLetterProducer,
        stop: threading.Event,
    ) -> None:
        self.request = request
        self.stop = stop
        self.summary = summary
        self.reader = reader
        self.ledger = ledger
        self.dlq = dlq
        self._producer: Any = None
        self.writers: dict[str, SinkWriter] = {}
        self.limiter = RateLimiter(request.rate_limit, sleep=stop.wait)
        self.chunk = max(1, min(CHUNK_RECORDS, int(request.rate_limit or CHUNK_RECORDS)))
        self.limit_reached = False
        self.partitions: dict[str, list[TopicPartition]] = {}
        self.bounds: dict[TopicPartition, tuple[int, int]] = {}
        self._last_progress = time.monotonic()
        self._started = time.monotonic()

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = pipeline_producer()
        return self._producer

    def publish(self, records: list[OutgoingRecord]) -> None:
        if records:
            produce_all(self.producer, records)

    def dead_letter(self, letters: list[tuple[Rejection, OutgoingRecord]]) -> set[tuple[str, int, int]]:
        """Send dead letters that failed again; returns the DLQ records whose letter Kafka took."""
        for rejection, out in letters:
            log.warning(
                "%s: failed again in %s (%s): to %s",
                rejection.record.where,
                rejection.stage,
                str(rejection.error)[:200],
                out.topic,
            )
        return self.dlq.deliver(letters)

    # -- topics and partitions

    def snapshot(self) -> None:
        """The DLQs' offsets now: the run handles what was there when it started, nothing later
        (not the records it sends back itself, nor those a run it waits for sends back)."""
        for origin in self.request.topics:
            tps = self.reader.partitions(dlq_topic(origin))
            self.bounds.update(self.reader.bounds(tps))
            self.partitions[origin] = tps

    def topic(self, origin: str) -> None:
        dlq = dlq_topic(origin)
        if not self.request.dry_run:
            check_topics(self.producer, [origin, dlq, parking_topic(origin)])
            self.ledger.lock(dlq)
        try:
            for tp in self.partitions[origin]:
                first, end = self.bounds[tp]
                start = max(first, self.request.offset_from or 0, self.reader.committed(tp) or 0)
                self.partition(origin, tp, start, end)
                if self.limit_reached:
                    return
        finally:
            if not self.request.dry_run:
                self.ledger.unlock(dlq)

    def partition(self, origin: str, tp: TopicPartition, start: int, end: int) -> None:
        where = f"{tp.topic}[{tp.partition}]"
        if self.request.offset_to is not None:
            end = min(end, self.request.offset_to + 1)
        if start >= end:
            log.info("%s: nothing to read (from offset %d, end %d)", where, start, end)
            return
        log.info("%s: reading offsets %d..%d (%d records)", where, start, end - 1, end - start)
        for records in self.reader.chunks(tp, start, end, self.chunk):
            scoped = self._in_scope(origin, tp, records)
            if scoped.letters:
                self.limiter.acquire(len(scoped.letters))
                self._check_stop(where, records[0].offset)  # this chunk is not handled: resume at it
                (self._plan if self.request.dry_run else self._handle)(origin, tp, scoped.letters)
            # Counted once dealt with, so a stopped run does not report a chunk it left alone.
            self.summary.scanned += scoped.scanned
            self.summary.skipped.update(scoped.skipped)
            position = scoped.end
            self._commit(tp, position)
            self._check_stop(where, position)
            self._progress(where, position, start, end)
            if self.limit_reached:
                log.info(
                    "%s: max_records=%d reached at offset %d", where, self.request.max_records, position - 1
                )
                return
        self._commit(tp, end)

    def _check_stop(self, where: str, resume_at: int) -> None:
        if self.stop.is_set():
            raise ReplayStopped(
                f"stopped on request; everything before {where}@{resume_at} is done, "
                "a rerun with the same run id continues there"
            )

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        if self.request.dry_run:
            return
        if self.summary.committed.get(f"{tp.topic}[{tp.partition}]", -1) < offset:
            self.reader.commit(tp, offset)
            self.summary.committed[f"{tp.topic}[{tp.partition}]"] = offset

    def _progress(self, where: str, position: int, start: int, end: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        s = self.summary
        done = position - start
        log.info(
            "progress %s@%d: scanned %d/%d (%.0f%%), %s; %.1f records/s, %d left to scan",
            where,
            position,
            done,
            end - start,
            100.0 * done / max(1, end - start),
            " ".join(f"{k}={v}" for k, v in s.totals().items()),
            s.handled / max(1e-9, now - self._started),
            end - position,
        )

    # -- which records

    def _classify(self, origin: str, record: Record) -> Letter | str:
        """The letter to replay, or why the record is skipped."""
        ctx = context_of(record)
        if ctx is None:
            return NO_CONTEXT
        if ctx.topic != origin:
            return FOREIGN_ORIGIN  # the headers point elsewhere: never route a record by them
        if self.request.out_of_scope(record.offset, ctx):
            return OUT_OF_SCOPE
        action = ACTIONS.get(ctx.connector) if self.request.target == "sink" else "republish"
        return UNKNOWN_CONNECTOR if action is None else Letter(record, ctx, origin, action)

    def _in_scope(self, origin: str, tp: TopicPartition, records: list[Record]) -> Scoped:
        """The chunk's letters to replay, why the others are skipped, and where the chunk ends."""
        classified = [(r, self._classify(origin, r)) for r in records]
        handled = self.ledger.handled(tp, [r.offset for r, c in classified if isinstance(c, Letter)])
        scoped = Scoped(records[-1].offset + 1)
        room = None if self.request.max_records is None else self.request.max_records - self.summary.handled
        for record, verdict in classified:
            if room is not None and len(scoped.letters) >= room:
                self.limit_reached = True
                scoped.end = record.offset
                return scoped
            scoped.scanned += 1
            if isinstance(verdict, str):
                scoped.skipped[verdict] += 1
            elif record.offset in handled:
                scoped.skipped[ALREADY_HANDLED] += 1
            else:
                scoped.letters.append(verdict)
        if room is not None and len(scoped.letters) >= room:
            self.limit_reached = True
        return scoped

    # -- what happens to them

    def _again(
        self, letter: Letter, connector: str, stage: str, error: BaseException
    ) -> tuple[OutgoingRecord, str]:
        """The dead letter of a replay that failed again: back to the DLQ, or parked at the limit."""
        replayed = replace(letter.record, headers=tuple(replay_headers(letter.record.headers)))
        out = dead_letter(replayed, connector=connector, stage=stage, error=error)
        if letter.context.replay_count + 1 >= self.request.max_replays:
            return replace(out, topic=parking_topic(letter.origin)), PARKED
        return out, FAILED_AGAIN

    def _stamp(self, timestamp_ms: int | None) -> int | None:
        now = datetime.now(UTC)
        if timestamp_ms is not None and timestamp_ms < (now - REPUBLISH_MAX_AGE).timestamp() * 1000:
            self.summary.restamped += 1
            return int(now.timestamp() * 1000)
        return timestamp_ms

    def _republished(self, letter: Letter) -> OutgoingRecord:
        """The DLQ record as it was on its topic, replay count increased."""
        r = letter.record
        return OutgoingRecord(
            letter.origin, r.key, r.value, self._stamp(r.timestamp_ms), replay_headers(r.headers)
        )

    def _validated(self, letter: Letter, item: Any) -> OutgoingRecord:
        """A message as the publish task makes it, plus the failure context (replay count increased),
        so a later failure in a sink keeps counting replays and parks the record eventually."""
        message = encode_item(item, letter.origin, letter.record.header(H_RUN_ID) or self.request.run_id)
        context = [(k, v) for k, v in replay_headers(letter.record.headers) if k.startswith((PREFIX, OURS))]
        return replace(
            message, timestamp_ms=self._stamp(message.timestamp_ms), headers=message.headers + context
        )

    def _plan(self, origin: str, tp: TopicPartition, letters: list[Letter]) -> None:
        """Dry run: what each letter would become; only decoding is tried, nothing is written."""
        for letter in letters:
            if letter.action == "republish":
                self.summary.count(letter, REPUBLISHED)
                continue
            if isinstance(decode(letter.record), Rejection):
                last = letter.context.replay_count + 1 >= self.request.max_replays
                self.summary.count(letter, PARKED if last else FAILED_AGAIN)
                continue
            self.summary.count(letter, REPUBLISHED if letter.action == "validate" else REPLAYED)

    def _handle(self, origin: str, tp: TopicPartition, letters: list[Letter]) -> None:
        outcomes: dict[int, str] = {}
        by_connector: defaultdict[str, list[Letter]] = defaultdict(list)
        for letter in letters:
            if letter.action == "sink":
                by_connector[letter.context.connector].append(letter)
        for connector, group in by_connector.items():
            outcomes.update(self._to_sink(connector, tp, group))
        outcomes.update(self._to_topic([x for x in letters if x.action != "sink"]))
        # Only now is every outcome durable (stored, or acknowledged by Kafka): write them down.
        self.ledger.record(
            [
                x.ledger_row(outcomes[x.record.offset], self.request.target, self.request.run_id)
                for x in letters
            ]
        )
        for letter in letters:
            self.summary.count(letter, outcomes[letter.record.offset])

    def _writer(self, connector: str) -> SinkWriter:
        if connector not in self.writers:
            self.writers[connector] = SinkWriter(
                build_replay_sink(connector, self.request.group), stop=self.stop
            )
        return self.writers[connector]

    def _to_sink(self, connector: str, tp: TopicPartition, letters: list[Letter]) -> dict[int, str]:
        writer = self._writer(connector)
        writer.open(tp)
        outcomes: dict[int, str] = {}
        earlier = writer.already_stored(tp, [x.record.offset for x in letters])
        if earlier:
            log.info(
                "%s: %d record(s) of %s[%d] were stored by an earlier attempt of a replay",
                connector,
                len(earlier),
                tp.topic,
                tp.partition,
            )
        by_offset = {x.record.offset: x for x in letters}
        batch, now = Batch(), time.monotonic()
        for letter in letters:
            if letter.record.offset in earlier:
                outcomes[letter.record.offset] = REPLAYED
                continue
            decoded = decode(letter.record)
            if isinstance(decoded, Rejection):
                batch.add_rejected(decoded, now)
            else:
                batch.add_item(decoded, now)
        if not len(batch):
            return outcomes

        def dead_letters(rejections: Sequence[Rejection]) -> set[tuple[str, int, int]]:
            again = {
                r.source: self._again(by_offset[r.record.offset], connector, r.stage, r.error)
                for r in rejections
            }
            acked: set[tuple[str, int, int]] = set()
            try:
                acked = self.dead_letter([(r, again[r.source][0]) for r in rejections])
            except DeliveryFailed as exc:
                acked = exc.acked
                raise
            finally:
                for source in acked:  # a retry of the write does not send these again
                    outcomes[source[2]] = again[source][1]
            return acked

        writer.write(batch, dead_letters)
        for decoded in batch.items:
            outcomes.setdefault(decoded.record.offset, REPLAYED)
        return outcomes

    def _to_topic(self, letters: list[Letter]) -> dict[int, str]:
        outgoing: list[OutgoingRecord] = []
        invalid: list[tuple[Rejection, OutgoingRecord]] = []
        outcomes: dict[int, str] = {}
        for letter in letters:
            decoded = None if letter.action == "republish" else decode(letter.record)
            if decoded is None:
                outgoing.append(self._republished(letter))
                outcomes[letter.record.offset] = REPUBLISHED
            elif isinstance(decoded, Rejection):
                still = Rejection(letter.record, decoded.error, STAGE_VALIDATE)
                out, outcomes[letter.record.offset] = self._again(
                    letter, VALIDATE, STAGE_VALIDATE, still.error
                )
                invalid.append((still, out))
            else:
                outgoing.append(self._validated(letter, decoded.item))
                outcomes[letter.record.offset] = REPUBLISHED
        self.publish(outgoing)
        self.dead_letter(invalid)
        return outcomes

    def close(self) -> None:
        for connector, writer in self.writers.items():
            try:
                writer.stop()
            except Exception:
                log.exception("stopping the %s sink failed", connector)
        if self._producer is not None:
            self._producer.flush(30)
        self.dlq.close()


def replay(request: ReplayRequest, *, stop: threading.Event | None = None) -> ReplaySummary:
    """Replay the DLQ records `request` selects; logs progress and a summary, returns the summary.

    Setting `stop` ends the run after its current chunk with ReplayStopped.
    """
    group = None if request.dry_run else request.group
    summary = ReplaySummary(request.run_id, group, request.dry_run, request.target, request.describe())
    log.info(
        "DLQ replay %s: %s%s", request.run_id, summary.scope, f"; consumer group {group}" if group else ""
    )
    started = time.monotonic()
    ledger = Ledger(PostgresSettings(), request.run_id)
    reader = DlqReader(reader_config(group))
    run = _Run(
        request=request,
        summary=summary,
        reader=reader,
        ledger=ledger,
        dlq=DeadLetterProducer(producer_config(KafkaSettings(), "dlq-replay"), connector="dlq-replay"),
        stop=stop or threading.Event(),
    )
    try:
        ledger.check()
        run.snapshot()
        for topic in request.topics:
            run.topic(topic)
            if run.limit_reached:
                break
    finally:
        try:
            run.close()
        finally:
            reader.close()
            ledger.close()
            summary.seconds = time.monotonic() - started
            for line in summary.lines():  # a failed or stopped run reports what it did, too
                log.info("%s", line)
    return summary

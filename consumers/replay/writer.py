"""A replay's write into the sink a dead letter failed in: the sink's own lifecycle, the
consumers' one write step, transient errors retried (bounded: a run that cannot write fails)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import TypeVar

from kafka.structs import TopicPartition

from consumers.batching import Batch
from consumers.retry import Backoff, RetryStopped, retry
from consumers.sink import SinkTask
from consumers.write import DeadLetters, abort, write_batch

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_FOR_S = 600.0


class ReplayStopped(Exception):
    """The run was asked to stop (SIGTERM) and did, after its last durable chunk."""


class SinkWriter:
    """The sink a dead letter failed in, driven through its lifecycle."""

    def __init__(
        self, sink: SinkTask, retry_for_s: float = RETRY_FOR_S, stop: threading.Event | None = None
    ) -> None:
        self.sink = sink
        self.retry_for_s = retry_for_s
        self.stopping = stop or threading.Event()
        self.started = False
        self.opened: set[TopicPartition] = set()

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        backoff = Backoff(0.5, 15.0)

        def on_error(exc: Exception, delay: float) -> None:
            abort(self.sink)
            log.warning(
                "%s %s failed, retry #%d in %.1fs: %s", self.sink.name, what, backoff.attempts, delay, exc
            )

        try:
            return retry(
                call,
                backoff=backoff,
                wait=lambda delay: not self.stopping.wait(delay),
                on_error=on_error,
                give_up_after_s=self.retry_for_s,
                what=f"{self.sink.name} {what}",
            )
        except RetryStopped as exc:
            raise ReplayStopped(str(exc)) from exc

    def open(self, tp: TopicPartition) -> None:
        if not self.started:
            self._retrying("start", self.sink.start)
            self.started = True
        if tp in self.opened:
            return
        # open() prepares the partition (HDFS, as a guest: empties what a killed replay left in
        # its staging folder, and neither claims the partition nor reads a resume offset). The
        # offsets it returns do not apply to a replay, which writes DLQ offsets out of order
        # across runs: the ledger decides what to write.
        self._retrying("open", lambda: self.sink.open([tp], {}))
        self.opened.add(tp)

    def already_stored(self, tp: TopicPartition, offsets: Collection[int]) -> set[int]:
        """What the store holds already (only HDFS, where a second write is a second copy, says)."""
        if not offsets:
            return set()
        return self._retrying("reading what is stored", lambda: self.sink.stored_offsets(tp, offsets))

    def write(self, batch: Batch, dead_letters: DeadLetters) -> None:
        """put → dead letters of what still fails → flush, retried until durable."""
        self._retrying("write", lambda: write_batch(self.sink, batch, dead_letters))

    def stop(self) -> None:
        try:
            if self.opened:
                self.sink.close(sorted(self.opened))
        finally:
            self.sink.stop()


def build_replay_sink(connector: str, group: str) -> SinkTask:
    """The connector's sink with its settings from the environment, bookkeeping under `group`."""
    from consumers.__main__ import build_sink
    from consumers.settings import ConsumerSettings, resolve

    guest = re.sub(r"[^A-Za-z0-9._-]", "_", group)[:200]
    return build_sink(replace(resolve(connector, ConsumerSettings()), group=group), guest=guest)

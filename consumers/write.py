"""The one write step, shared by the consumer runtime and the DLQ replay.

put → check → dead letters of what was rejected → flush, once. Offsets never move past a record
that is neither stored nor dead-lettered: the dead letters are acknowledged before flush() makes
the batch durable. On any error the sink's staging is aborted, so the caller may retry the whole
batch; dead letters Kafka already acknowledged are not sent again (`batch.dead_lettered`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from consumers.batching import Batch, Rejection
from consumers.deadletters import DeliveryFailed
from consumers.sink import SinkTask

log = logging.getLogger(__name__)

# Produces the dead letters of these rejections; returns the originals Kafka acknowledged, or
# raises DeliveryFailed naming those it did.
DeadLetters = Callable[[Sequence[Rejection]], set[tuple[str, int, int]]]
# Sees the outcomes (True = dead-lettered, in arrival order) and every rejection before anything
# is dead-lettered; raises to stop the write (the runtime's circuit breaker).
Check = Callable[[list[bool], list[Rejection]], None]


def write_batch(
    sink: SinkTask, batch: Batch, dead_letters: DeadLetters, check: Check | None = None
) -> tuple[list[Rejection], list[bool]]:
    """Write the batch once; returns what the store refused and the batch's outcomes."""
    try:
        refused = sink.put(batch)
        outcomes = batch.outcomes(refused)
        rejections = batch.rejected + refused
        if check is not None:
            check(outcomes, rejections)
        todo = [r for r in rejections if r.source not in batch.dead_lettered]
        try:
            batch.dead_lettered |= dead_letters(todo)
        except DeliveryFailed as exc:
            batch.dead_lettered |= exc.acked
            raise
        sink.flush(batch)
    except BaseException:
        abort(sink)
        raise
    return refused, outcomes


def abort(sink: SinkTask) -> None:
    """Drop what the sink staged; a failing abort is logged, not raised (open() cleans up too)."""
    try:
        sink.abort()
    except Exception:
        log.exception(
            "%s: abort failed (staged data is cleaned up when the partition is opened again)", sink.name
        )

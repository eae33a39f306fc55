"""The dead-letter contract: every producer of DLQ records and the replay code use this module.

A DLQ record of topic `T` goes to `T-dlq` with the original key, value, timestamp and headers,
plus Kafka Connect's error context headers (`__connect.errors.*`, understood by Kafka UIs) and
our own: when it first failed, when it failed this time, how often, how often it was replayed
(docs/architecture.md#dead-letters).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from crawlstore.messages import OutgoingRecord, Record
from crawlstore.topics import dlq_topic

PREFIX = "__connect.errors."
H_TOPIC = PREFIX + "topic"
H_PARTITION = PREFIX + "partition"
H_OFFSET = PREFIX + "offset"
H_CONNECTOR = PREFIX + "connector.name"
H_STAGE = PREFIX + "stage"
H_EXC_CLASS = PREFIX + "exception.class.name"
H_EXC_MESSAGE = PREFIX + "exception.message"
H_EXC_STACKTRACE = PREFIX + "exception.stacktrace"
OURS = "crawlstore.dlq."
H_ERROR_KIND = OURS + "error_kind"
H_FIRST_FAILED_AT = OURS + "first_failed_at"
H_FAILED_AT = OURS + "failed_at"
H_ATTEMPTS = OURS + "attempts"
H_REPLAY_COUNT = OURS + "replay_count"
# Set on a dead letter whose value was cut to fit Kafka: the original value's size in bytes.
H_TRUNCATED_FROM = OURS + "truncated_from"
MAX_MESSAGE = 2_000
MAX_STACKTRACE = 8_000
# A dead letter stays under the broker's default message.max.bytes (1 MiB) with room to spare.
MAX_LETTER_BYTES = 900_000
TRUNCATED = b"...[cut by crawlstore: the value had %d bytes]"

# Stages, as in Kafka Connect's ErrorReporter: where in the flow the record failed.
STAGE_VALIDATE = "VALIDATE"
STAGE_DESERIALIZE = "VALUE_CONVERTER"
STAGE_SINK = "TASK_PUT"


@dataclass(frozen=True)
class FailureContext:
    """What the DLQ headers of a record say about its failure."""

    topic: str
    partition: int
    offset: int
    connector: str
    stage: str
    exception_class: str
    exception_message: str
    error_kind: str
    first_failed_at: datetime | None
    failed_at: datetime | None
    attempts: int
    replay_count: int


def _is_context_header(name: str) -> bool:
    return name.startswith(PREFIX) or name.startswith(OURS)


def dead_letter(
    record: Record,
    *,
    connector: str,
    stage: str,
    error: BaseException,
    error_kind: str | None = None,
    now: datetime | None = None,
) -> OutgoingRecord:
    """The DLQ record for `record`, which failed in `connector` at `stage` with `error`.

    A record that already carries DLQ context (a replay that failed again) keeps its first
    failure time and replay count and gets its attempt count increased.
    """
    now = now or datetime.now(UTC)
    previous = failure_context(record.headers) if any(k == H_FAILED_AT for k, _ in record.headers) else None
    origin_topic = previous.topic if previous else record.topic
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    context = {
        H_TOPIC: origin_topic,
        H_PARTITION: str(previous.partition if previous else record.partition),
        H_OFFSET: str(previous.offset if previous else record.offset),
        H_CONNECTOR: connector,
        H_STAGE: stage,
        H_EXC_CLASS: f"{type(error).__module__}.{type(error).__qualname__}",
        H_EXC_MESSAGE: str(error)[:MAX_MESSAGE],
        H_EXC_STACKTRACE: stack[-MAX_STACKTRACE:],
        H_ERROR_KIND: error_kind or getattr(error, "kind", None) or type(error).__name__,
        H_FIRST_FAILED_AT: (
            previous.first_failed_at if previous and previous.first_failed_at else now
        ).isoformat(),
        H_FAILED_AT: now.isoformat(),
        H_ATTEMPTS: str((previous.attempts if previous else 0) + 1),
        H_REPLAY_COUNT: str(previous.replay_count if previous else 0),
    }
    headers = [(k, v) for k, v in record.headers if not _is_context_header(k)]
    headers += [(k, v.encode("utf-8", errors="replace")) for k, v in context.items()]
    headers += [(k, v) for k, v in record.headers if k == H_TRUNCATED_FROM][:1]  # cut before: still
    letter = OutgoingRecord(dlq_topic(origin_topic), record.key, record.value, record.timestamp_ms, headers)
    return slim(letter)


def letter_size(letter: OutgoingRecord) -> int:
    return len(letter.key or b"") + len(letter.value or b"") + sum(len(k) + len(v) for k, v in letter.headers)


def slim(letter: OutgoingRecord, limit: int = MAX_LETTER_BYTES) -> OutgoingRecord:
    """A dead letter that fits in `limit` bytes: over it, first without the stack trace, then with
    its value cut and a marker (the value's end, and the `truncated_from` header); the key, the
    reason and every other header are kept."""
    if letter_size(letter) <= limit:
        return letter
    headers = [(k, v) for k, v in letter.headers if k != H_EXC_STACKTRACE]
    headers.append((H_EXC_STACKTRACE, b"(left out: the dead letter was too large)"))
    value = letter.value or b""
    slimmer = OutgoingRecord(letter.topic, letter.key, value, letter.timestamp_ms, headers)
    over = letter_size(slimmer) - limit
    if over > 0:
        marker = TRUNCATED % len(value)
        if not any(k == H_TRUNCATED_FROM for k, _ in headers):
            headers.append((H_TRUNCATED_FROM, str(len(value)).encode()))
        keep = max(0, len(value) - over - len(marker) - 64)
        slimmer = OutgoingRecord(
            letter.topic, letter.key, value[:keep] + marker, letter.timestamp_ms, headers
        )
    return slimmer


def failure_context(headers: Sequence[tuple[str, bytes]]) -> FailureContext:
    h = {k: (v or b"").decode("utf-8", errors="replace") for k, v in headers}

    def when(name: str) -> datetime | None:
        return datetime.fromisoformat(h[name]) if h.get(name) else None

    return FailureContext(
        topic=h.get(H_TOPIC, ""),
        partition=int(h.get(H_PARTITION) or -1),
        offset=int(h.get(H_OFFSET) or -1),
        connector=h.get(H_CONNECTOR, ""),
        stage=h.get(H_STAGE, ""),
        exception_class=h.get(H_EXC_CLASS, ""),
        exception_message=h.get(H_EXC_MESSAGE, ""),
        error_kind=h.get(H_ERROR_KIND, ""),
        first_failed_at=when(H_FIRST_FAILED_AT),
        failed_at=when(H_FAILED_AT),
        attempts=int(h.get(H_ATTEMPTS) or 0),
        replay_count=int(h.get(H_REPLAY_COUNT) or 0),
    )


def replay_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Headers of a DLQ record being replayed: its context stays, its replay count goes up."""
    count = failure_context(headers).replay_count + 1
    return [(k, v) for k, v in headers if k != H_REPLAY_COUNT] + [(H_REPLAY_COUNT, str(count).encode())]

"""Produce dead letters (records built by crawlstore.dlq, the one DLQ contract) and wait for Kafka's ack.

A batch's offsets are committed only after its dead letters are acknowledged, so a crash never
loses one; it may produce one twice (at-least-once), which the replay side can recognise by the
`__connect.errors.topic/partition/offset` headers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from consumers.batching import Rejection
from consumers.errors import FatalError, TransientError
from crawlstore.dlq import H_EXC_STACKTRACE, dead_letter
from crawlstore.messages import OutgoingRecord

log = logging.getLogger(__name__)
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class DeliveryFailed(TransientError):
    """Some dead letters were not acknowledged; `acked` names the originals that were."""

    def __init__(self, message: str, acked: set[tuple[str, int, int]]) -> None:
        super().__init__(message)
        self.acked = acked


def _slim(letter: OutgoingRecord) -> OutgoingRecord:
    """The same dead letter without the stack trace, for originals close to the size limit."""
    headers = [(k, v) for k, v in letter.headers if k != H_EXC_STACKTRACE]
    return OutgoingRecord(letter.topic, letter.key, letter.value, letter.timestamp_ms, headers)


class DeadLetterProducer:
    def __init__(self, config: dict[str, Any], connector: str) -> None:
        self._config = config
        self.connector = connector
        self._producer: KafkaProducer | None = None

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(**self._config)
            except KafkaError as exc:
                raise TransientError(f"DLQ producer cannot reach Kafka: {exc!r}") from exc
        return self._producer

    def send(self, rejections: Sequence[Rejection], timeout_s: float = 30.0) -> set[tuple[str, int, int]]:
        """Produce one dead letter per rejection and wait; returns the originals Kafka acknowledged."""
        return self.deliver(
            [
                (r, dead_letter(r.record, connector=self.connector, stage=r.stage, error=r.error))
                for r in rejections
            ],
            timeout_s,
        )

    def deliver(
        self, letters: Sequence[tuple[Rejection, OutgoingRecord]], timeout_s: float = 30.0
    ) -> set[tuple[str, int, int]]:
        """Produce dead letters already built (e.g. by a replay) and wait; returns the originals
        Kafka acknowledged. One too large for Kafka goes again without its stack trace."""
        if not letters:
            return set()
        producer = self._client()
        pending: list[tuple[Rejection, OutgoingRecord, Any]] = []
        acked: set[tuple[str, int, int]] = set()
        try:
            for rejection, letter in letters:
                try:
                    future = self._produce(producer, letter)
                except _TOO_LARGE:
                    future = self._produce_slim(producer, rejection, letter)
                pending.append((rejection, letter, future))
            producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise DeliveryFailed(f"DLQ produce failed: {exc!r}", acked) from exc
        failures: list[str] = []
        for rejection, letter, future in pending:
            if future.succeeded():
                acked.add(rejection.source)
                continue
            error = future.exception if future.is_done else "no ack within timeout"
            if isinstance(error, _TOO_LARGE):
                acked.add(self._resend_slim(producer, rejection, letter, timeout_s))
                continue
            failures.append(f"{rejection.record.where} -> {letter.topic}: {error!r}")
        if failures:
            raise DeliveryFailed(
                f"{len(failures)} dead letter(s) not acknowledged, e.g. {failures[0]}", acked
            )
        return acked

    @staticmethod
    def _produce(producer: KafkaProducer, letter: OutgoingRecord) -> Any:
        return producer.send(
            letter.topic,
            key=letter.key,
            value=letter.value,
            headers=letter.headers,
            timestamp_ms=letter.timestamp_ms,
        )

    def _produce_slim(self, producer: KafkaProducer, rejection: Rejection, letter: OutgoingRecord) -> Any:
        try:
            return self._produce(producer, _slim(letter))
        except _TOO_LARGE as exc:
            # Dropping it would lose the record, skipping it would lose it silently: stop instead.
            raise FatalError(
                f"{rejection.record.where}: dead letter exceeds the producer's size limit"
            ) from exc

    def _resend_slim(
        self, producer: KafkaProducer, rejection: Rejection, letter: OutgoingRecord, timeout_s: float
    ) -> tuple[str, int, int]:
        future = self._produce_slim(producer, rejection, letter)
        producer.flush(timeout=timeout_s)
        if future.succeeded():
            log.warning("%s: dead letter sent without its stack trace (size limit)", rejection.record.where)
            return rejection.source
        if isinstance(future.exception, _TOO_LARGE):
            # Dropping it would lose the record, skipping it would lose it silently: stop instead.
            raise FatalError(f"{rejection.record.where}: dead letter exceeds the broker's size limit")
        raise DeliveryFailed(f"{rejection.record.where}: {future.exception!r}", set())

    def close(self, timeout_s: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.close(timeout=timeout_s)
            self._producer = None

"""What a sink can say went wrong, and what the runtime does about it.

- TransientError: the store (or Kafka) is unavailable for now. The runtime pauses the partitions,
  backs off and retries the whole batch; such records are never dead-lettered.
- StoreRejected: the store refused one record and no retry can fix it: that record goes to the DLQ.
- FatalError: something systemic (schema missing, permissions, misconfiguration): stop, non-zero exit.
- Fenced: the store says another consumer has taken over partitions since this one opened them:
  the runtime drops what it holds of them and opens them again (the store decides from where).
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka.structs import TopicPartition


class TransientError(Exception):
    """Retry later: the store or Kafka did not answer, timed out, or asked us to slow down."""


class Fenced(TransientError):
    """Another consumer claimed these partitions in the store after this one opened them."""

    def __init__(self, partitions: Iterable[TopicPartition], message: str) -> None:
        super().__init__(message)
        self.partitions = frozenset(partitions)


class StoreRejected(Exception):
    """The store refused this one record (a value it cannot hold); it goes to the DLQ."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class FatalError(Exception):
    """Retrying cannot help and dead-lettering would hide it: the consumer stops."""


class CircuitOpen(FatalError):
    """The dead-letter rate says something systemic is wrong (arroyo's DLQ limit)."""

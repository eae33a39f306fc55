"""A DLQ record in a replay's scope, what the run does with it, and the words for its outcomes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from crawlstore.connectors import SINKS, VALIDATE
from crawlstore.dlq import H_FAILED_AT, FailureContext, failure_context
from crawlstore.messages import Record

Action = Literal["sink", "validate", "republish"]
# Target `sink`: what happens to a dead letter of each connector.
ACTIONS: dict[str, Action] = {**dict.fromkeys(SINKS, "sink"), VALIDATE: "validate"}

# Outcomes (the ledger's `outcome`), and what a dry run says would happen instead.
REPLAYED, FAILED_AGAIN, PARKED, REPUBLISHED = "replayed", "failed_again", "parked", "republished"
OUTCOMES = (REPLAYED, FAILED_AGAIN, PARKED, REPUBLISHED)
WOULD = {
    REPLAYED: "would_replay",
    REPUBLISHED: "would_republish",
    FAILED_AGAIN: "would_fail_again",
    PARKED: "would_park",
}
# Why a DLQ record was not replayed by this run.
OUT_OF_SCOPE, ALREADY_HANDLED, NO_CONTEXT, UNKNOWN_CONNECTOR, FOREIGN_ORIGIN = (
    "out_of_scope",
    "already_handled",
    "no_context",
    "unknown_connector",
    "foreign_origin",
)


@dataclass(frozen=True)
class Letter:
    """A DLQ record in the run's scope and what the run will do with it."""

    record: Record
    context: FailureContext
    origin: str  # the pipeline topic it came from
    action: Action

    @property
    def connector(self) -> str:
        return self.context.connector or "(none)"

    @property
    def error_class(self) -> str:
        return self.context.exception_class or "(none)"

    def ledger_row(self, outcome: str, target: str, run_id: str) -> tuple[Any, ...]:
        ctx, r = self.context, self.record
        return (
            r.topic,
            r.partition,
            r.offset,
            outcome,
            ctx.connector,
            ctx.exception_class,
            ctx.error_kind,
            self.origin,
            ctx.partition,
            ctx.offset,
            ctx.replay_count,
            target,
            run_id,
        )


def context_of(record: Record) -> FailureContext | None:
    """The failure context of a dead letter, or None for a record without (a readable) one."""
    if not any(k == H_FAILED_AT for k, _ in record.headers):
        return None
    try:
        return failure_context(record.headers)
    except ValueError:
        return None


@dataclass
class Scoped:
    """A chunk sorted out: the letters to replay, skips by reason, the offset after the chunk."""

    end: int
    letters: list[Letter] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    scanned: int = 0

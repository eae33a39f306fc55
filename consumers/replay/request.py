"""What a replay run does, described once: the dlq_replay DAG's params and the CLI's options are
generated from the fields of ReplayRequest (their metadata holds the description and schema).

Cheap to import (the DAG file does at parse time): standard library and the topic names only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from crawlstore.connectors import CONNECTORS
from crawlstore.topics import DLQ_SUFFIX, PARKING_SUFFIX, pipeline_topics

if TYPE_CHECKING:
    from crawlstore.dlq import FailureContext

Target = Literal["sink", "topic"]
TARGETS: tuple[Target, ...] = get_args(Target)
GROUP_PREFIX = "crawlstore-dlq-replay."
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def _param(description: str, name: str | None = None, **schema: Any) -> dict[str, Any]:
    """Field metadata: the param's description, its name when not the field's, JSON-schema extras."""
    return {"description": description, "name": name, "schema": schema}


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def error_class_matches(pattern: str, ctx: FailureContext) -> bool:
    """`pattern` (shell wildcards allowed) names the exception class, its short name or the error kind."""
    short = ctx.exception_class.rsplit(".", 1)[-1]
    return any(
        fnmatch.fnmatchcase(name, pattern) for name in (ctx.exception_class, short, ctx.error_kind) if name
    )


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and how; one dlq_replay DAG run's params (or the CLI's options), resolved."""

    run_id: str  # the DAG run id (CLI: --run-id); a rerun with the same id resumes
    topics: tuple[str, ...] = field(
        default_factory=pipeline_topics,
        metadata=_param("Pipeline topic whose `-dlq` to replay (empty: every pipeline topic)", name="topic"),
    )
    sink: str | None = field(
        default=None,
        metadata=_param(
            "Only records that failed in this sink, or in the crawl DAG's validation",
            enum=[None, *CONNECTORS],
        ),
    )
    error_class: str | None = field(
        default=None,
        metadata=_param(
            "Exception class, its short name or the error kind; wildcards work "
            "(e.g. StoreRejected, postgres_23*, schema_violation)"
        ),
    )
    error_kind: str | None = field(
        default=None,
        metadata=_param(
            "Only records of exactly this error kind (their crawlstore.dlq.error_kind header, no wildcards)"
        ),
    )
    failed_from: datetime | None = field(
        default=None,
        metadata=_param(
            "Failure time from (inclusive). Empty on a manual run: no lower bound; "
            "scheduled and backfill runs use their data interval"
        ),
    )
    failed_to: datetime | None = field(default=None, metadata=_param("Failure time to (exclusive)"))
    offset_from: int | None = field(default=None, metadata=_param("First DLQ offset", minimum=0))
    offset_to: int | None = field(default=None, metadata=_param("Last DLQ offset (inclusive)", minimum=0))
    max_records: int | None = field(
        default=None, metadata=_param("Replay at most this many records (empty: all)", minimum=1)
    )
    rate_limit: float | None = field(
        default=None,
        metadata=_param(
            "Records per second at most (empty: as fast as the stores take them)", exclusiveMinimum=0
        ),
    )
    dry_run: bool = field(
        default=False,
        metadata=_param("Change nothing; report what would be replayed, by sink and error class"),
    )
    target: Target = field(
        default="sink",
        metadata=_param(
            "sink: only the sink that failed (the others stored the record already); "
            "topic: back onto the original topic, every sink sees it again",
            enum=list(TARGETS),
        ),
    )
    max_replays: int = field(
        default=3,
        metadata=_param("A record that failed this many replays goes to <topic>-dlq-parking", minimum=1),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "failed_from", _aware(self.failed_from))
        object.__setattr__(self, "failed_to", _aware(self.failed_to))
        problems = self._name_problems() + self._range_problems()
        if problems:
            raise ValueError("invalid replay request: " + "; ".join(problems))

    def _name_problems(self) -> list[str]:
        problems = [] if self.run_id else ["run_id is empty"]
        if not self.topics:
            problems.append("no topic")
        problems += [
            f"topic {topic!r} is not a pipeline topic name (give `T`, not `T{DLQ_SUFFIX}`)"
            for topic in self.topics
            if not TOPIC_NAME.fullmatch(topic) or topic.endswith((DLQ_SUFFIX, PARKING_SUFFIX))
        ]
        if self.sink is not None and self.sink not in CONNECTORS:
            problems.append(f"sink {self.sink!r} is none of {', '.join(CONNECTORS)}")
        if self.target not in TARGETS:
            problems.append(f"target {self.target!r} is none of {', '.join(TARGETS)}")
        return problems

    def _range_problems(self) -> list[str]:
        checks = [
            (
                bool(self.failed_from and self.failed_to and self.failed_from >= self.failed_to),
                "failed_from is not before failed_to",
            ),
            (self.offset_from is not None and self.offset_from < 0, "offset_from is negative"),
            (
                self.offset_from is not None
                and self.offset_to is not None
                and self.offset_from > self.offset_to,
                "offset_from is above offset_to",
            ),
            (self.max_records is not None and self.max_records < 1, "max_records is below 1"),
            (self.rate_limit is not None and self.rate_limit <= 0, "rate_limit is not positive"),
            (self.max_replays < 1, "max_replays is below 1"),
        ]
        return [problem for failed, problem in checks if failed]

    @property
    def group(self) -> str:
        """The run's own consumer group: a rerun of the same run resumes where it stopped."""
        return GROUP_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", self.run_id)[:200]

    def describe(self) -> str:
        parts = [f"topics {', '.join(self.topics)}", f"target {self.target}"]
        if self.failed_from or self.failed_to:
            start = self.failed_from.isoformat() if self.failed_from else "-inf"
            end = self.failed_to.isoformat() if self.failed_to else "+inf"
            parts.append(f"failed_at in [{start}, {end})")
        if self.offset_from is not None or self.offset_to is not None:
            parts.append(
                f"DLQ offsets {self.offset_from or 0}..{'' if self.offset_to is None else self.offset_to}"
            )
        if self.sink:
            parts.append(f"sink {self.sink}")
        if self.error_class:
            parts.append(f"error class {self.error_class}")
        if self.error_kind:
            parts.append(f"error kind {self.error_kind}")
        if self.max_records:
            parts.append(f"at most {self.max_records} records")
        if self.rate_limit:
            parts.append(f"at most {self.rate_limit:g} records/s")
        parts.append(f"parking after {self.max_replays} replays")
        return ", ".join(parts) + (" (DRY RUN)" if self.dry_run else "")

    def out_of_scope(self, offset: int, ctx: FailureContext) -> bool:
        """Whether the filters leave this DLQ record out."""
        if self.sink and ctx.connector != self.sink:
            return True
        if self.error_class and not error_class_matches(self.error_class, ctx):
            return True
        if self.error_kind and ctx.error_kind != self.error_kind:
            return True
        return not (self._offset_in_range(offset) and self._failed_in_window(_aware(ctx.failed_at)))

    def _offset_in_range(self, offset: int) -> bool:
        return (self.offset_from is None or offset >= self.offset_from) and (
            self.offset_to is None or offset <= self.offset_to
        )

    def _failed_in_window(self, failed_at: datetime | None) -> bool:
        if not (self.failed_from or self.failed_to):
            return True
        if failed_at is None:
            return False
        return (self.failed_from is None or failed_at >= self.failed_from) and (
            self.failed_to is None or failed_at < self.failed_to
        )


# ---------------------------------------------------------------------------- the params


@dataclass(frozen=True)
class RequestParam:
    """One field of ReplayRequest as a DAG param / CLI option."""

    name: str  # the DAG param's name; the CLI option is --name-with-dashes
    field: str  # the ReplayRequest field it sets
    kind: type  # str, int, float, bool, datetime, or tuple (one or more topic names)
    default: Any
    description: str
    schema: dict[str, Any]  # JSON-schema keywords beyond the type, as Airflow's Param takes them

    @property
    def json_type(self) -> str | list[str]:
        base = {str: "string", int: "integer", float: "number", bool: "boolean", datetime: "string"}
        name = base.get(self.kind, "string")
        return name if self.default is not None and self.kind is not tuple else ["null", name]

    @property
    def param_default(self) -> Any:
        return None if self.kind is tuple else self.default  # no topic given: every pipeline topic

    def param_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of airflow.sdk.Param (with the default as first argument)."""
        extra: dict[str, Any] = {"format": "date-time"} if self.kind is datetime else {}
        if self.kind is tuple:  # the topics: the configured ones as examples
            extra["examples"] = list(pipeline_topics())
        return {"type": self.json_type, "description": self.description, **extra, **self.schema}

    def convert(self, raw: Any) -> Any:
        """A param's or option's value as the field's type; None or "" means the field's default."""
        if raw is None or raw == "":
            return pipeline_topics() if self.kind is tuple else self.default
        if self.kind is tuple:
            return tuple(str(v) for v in raw) if isinstance(raw, list | tuple) else (str(raw),)
        if self.kind is datetime:
            return raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
        if self.kind is bool:
            return bool(raw)
        return self.kind(raw)


def _kind(annotation: Any) -> type:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if get_origin(annotation) is Literal:
        return str
    if get_origin(annotation) is tuple:
        return tuple
    return annotation  # type: ignore[no-any-return]


def _params() -> tuple[RequestParam, ...]:
    hints = get_type_hints(ReplayRequest)
    return tuple(
        RequestParam(
            name=f.metadata.get("name") or f.name,
            field=f.name,
            kind=_kind(hints[f.name]),
            default=None if f.default is dataclasses.MISSING else f.default,
            description=f.metadata["description"],
            schema=f.metadata["schema"],
        )
        for f in dataclasses.fields(ReplayRequest)
        if "description" in f.metadata
    )


PARAMS = _params()


def request_from_values(values: Mapping[str, Any], *, run_id: str) -> ReplayRequest:
    """The request that DAG params or CLI options (by param name) describe; unset ones default."""
    return ReplayRequest(run_id=run_id, **{p.field: p.convert(values.get(p.name)) for p in PARAMS})


def request_from_params(
    params: Mapping[str, Any],
    *,
    run_id: str,
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
) -> ReplayRequest:
    """The request of one DAG run: explicit params win; scheduled and backfill runs default to
    the failures of their data interval, manual runs to every failure time."""
    values = dict(params)
    if not values.get("failed_from") and not values.get("failed_to") and run_type != "manual":
        if data_interval_start is None or data_interval_end is None:
            # Without an interval a scheduled run would replay every failure ever: refuse.
            raise ValueError(f"{run_type} run {run_id} has no data interval and no failed_from/failed_to")
        values["failed_from"], values["failed_to"] = data_interval_start, data_interval_end
    return request_from_values(values, run_id=run_id)

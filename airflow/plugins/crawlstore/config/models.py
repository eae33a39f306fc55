"""The typed form of the pipeline's configuration: item kinds and sources, as declared in YAML.

Every model refuses unknown keys (naming the allowed ones), names that are not safe identifiers,
and constraints that do not fit a field's type, so a mistake surfaces with its file and key
(crawlstore.config.loader) instead of as a half-loaded pipeline.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Fields every item has (filled by the crawl) and names the stores use for their own columns.
COMMON_FIELDS = ("source", "crawled_at")
RESERVED = frozenset(
    {*COMMON_FIELDS, "raw", "kafka", "kafka_topic", "kafka_partition", "kafka_offset", "landed_at"}
)
FieldType = Literal[
    "text",
    "identifier",
    "url",
    "integer",
    "decimal",
    "float",
    "boolean",
    "timestamp",
    "date",
    "enum",
    "list[text]",
    "json",
]
NUMERIC = frozenset({"integer", "decimal", "float"})
TEXTUAL = frozenset({"text", "identifier", "url"})
# Which constraint keys each type takes (beyond type, required, description, search).
CONSTRAINTS: dict[str, frozenset[str]] = {
    "text": frozenset({"min_length", "max_length", "pattern"}),
    "identifier": frozenset({"pattern"}),
    "url": frozenset({"max_length"}),
    "integer": frozenset({"min", "max"}),
    "decimal": frozenset({"min", "max", "digits", "places"}),
    "float": frozenset({"min", "max"}),
    "boolean": frozenset(),
    "timestamp": frozenset(),
    "date": frozenset(),
    "enum": frozenset({"values"}),
    "list[text]": frozenset({"max_length", "max_items"}),
    "json": frozenset(),
}
ALL_CONSTRAINTS = frozenset().union(*CONSTRAINTS.values())
CONDITION = re.compile(
    r"^\s*([a-z][a-z0-9_]*)\s*(?:(<=|<|>=|>|==|!=)\s*(-?\d+(?:\.\d+)?|true|false|'[^']*')"
    r"|(matches)\s*'([^']*)')\s*$"
)
CHECK = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(<=|<|>=|>|==|!=)\s*([a-z][a-z0-9_]*)\s*$")
TEMPLATE_PART = re.compile(r"\{([^{}]*)\}")


def _name(value: str, what: str, pattern: re.Pattern[str] = NAME) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a safe name: lower-case ASCII letters, digits and _, "
            f"starting with a letter, at most {pattern.pattern.rsplit(',', 1)[1].split('}')[0]} more"
        )
    return value


class Strict(BaseModel):
    """Refuses unknown keys with the list of the allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keys = [f.alias or name for name, f in cls.model_fields.items()]  # as written in YAML
            unknown = sorted(str(k) for k in data if k not in keys)
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}")
        return data


class FieldSpec(Strict):
    type: FieldType
    required: bool = False
    description: str = ""
    search: bool = Field(False, description="full-text searched (OpenSearch `text`, else `keyword`)")
    min: Decimal | None = None
    max: Decimal | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=1, le=1_000_000)
    max_items: int | None = Field(None, ge=1, le=100_000)
    pattern: str | None = None
    values: tuple[str, ...] | None = None
    digits: int | None = Field(None, ge=1, le=38)
    places: int | None = Field(None, ge=0, le=38)

    @model_validator(mode="after")
    def _fits_the_type(self) -> FieldSpec:
        given = {k for k in ALL_CONSTRAINTS if getattr(self, k) is not None}
        wrong = sorted(given - CONSTRAINTS[self.type])
        if wrong:
            allowed = ", ".join(sorted(CONSTRAINTS[self.type])) or "none"
            raise ValueError(
                f"{', '.join(wrong)} do(es) not apply to type {self.type} (its constraints: {allowed})"
            )
        if self.search and self.type not in ("text", "list[text]"):
            raise ValueError(f"search applies to text fields, not to type {self.type}")
        if self.type == "enum" and not self.values:
            raise ValueError("an enum needs `values`, the allowed values")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from exc
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        if self.places is not None and self.digits is not None and self.places > self.digits:
            raise ValueError("places is above digits")
        return self


class KeyTemplate(Strict):
    """A key made of other fields, e.g. `{device_id}:{measured_at}` (timestamps as YYYYmmddTHHMMSS, UTC)."""

    field: str
    template: str


class Derived(Strict):
    """A field the pipeline fills itself: `then` when any condition holds, else `else`."""

    when_any: tuple[str, ...] = Field(
        min_length=1, description="`<field> <op> <number|true|false|'text'>` or `<field> matches '<regex>'`"
    )
    then: str | int | float | bool
    otherwise: str | int | float | bool | None = Field(None, alias="else")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KindSpec(Strict):
    kind: str
    version: int = Field(1, ge=1, description="schema version, in the messages' crawlstore.schema header")
    description: str = ""
    key: str | KeyTemplate
    fields: dict[str, FieldSpec]
    checks: tuple[str, ...] = Field((), description="rules between fields, e.g. `sale_price <= price`")
    derived: dict[str, Derived] = Field({}, description="fields filled from rules over the others")

    @property
    def key_field(self) -> str:
        return self.key if isinstance(self.key, str) else self.key.field

    @property
    def schema_version(self) -> str:
        return f"crawlstore.{self.kind}.v{self.version}"

    @model_validator(mode="after")
    def _consistent(self) -> KindSpec:
        self._check_fields()
        self._check_key()
        self._check_rules()
        self._check_derived()
        return self

    def _check_fields(self) -> None:
        _name(self.kind, "kind")
        if not self.fields:
            raise ValueError("a kind needs at least one field")
        for name in self.fields:
            _name(name, "field", FIELD_NAME)
            if name in RESERVED:
                raise ValueError(f"field {name!r} is reserved (the pipeline sets or stores it itself)")

    def _check_key(self) -> None:
        key = self.fields.get(self.key_field)
        if key is None:
            raise ValueError(f"key {self.key_field!r} is not one of the fields ({', '.join(self.fields)})")
        if key.type not in ("identifier", "text") or not key.required:
            raise ValueError(f"key {self.key_field!r} must be a required identifier or text field")
        if isinstance(self.key, KeyTemplate):
            parts = TEMPLATE_PART.findall(self.key.template)
            if not parts:
                raise ValueError(f"key template {self.key.template!r} names no {{field}}")
            for part in parts:
                spec = self.fields.get(part)
                if spec is None or not spec.required or part == self.key_field:
                    raise ValueError(f"key template: {{{part}}} is not another required field of the kind")

    def _check_rules(self) -> None:
        for check in self.checks:
            match = CHECK.fullmatch(check)
            if match is None:
                raise ValueError(f"check {check!r} is not `<field> <op> <field>` (op: < <= > >= == !=)")
            for name in (match[1], match[3]):
                spec = self.fields.get(name)
                if spec is None or spec.type not in NUMERIC | {"timestamp", "date"}:
                    raise ValueError(f"check {check!r}: {name!r} is not a numeric or time field of the kind")

    def _check_derived(self) -> None:
        for name, rule in self.derived.items():
            spec = self.fields.get(name)
            if spec is None or spec.required or name == self.key_field:
                raise ValueError(f"derived {name!r} must be an optional field of the kind, not the key")
            for condition in rule.when_any:
                match = CONDITION.fullmatch(condition)
                if match is None:
                    raise ValueError(
                        f"derived {name}: condition {condition!r} is not `<field> <op> <value>` "
                        "or `<field> matches '<regex>'`"
                    )
                other = self.fields.get(match[1])
                if other is None or match[1] in self.derived:
                    raise ValueError(f"derived {name}: {match[1]!r} is not a declared, non-derived field")
                if match[4]:
                    try:
                        re.compile(match[5])
                    except re.error as exc:
                        raise ValueError(f"derived {name}: {match[5]!r} is not a regular expression") from exc
            allowed = spec.values if spec.type == "enum" else None
            for value in (rule.then, rule.otherwise):
                if allowed is not None and value is not None and value not in allowed:
                    raise ValueError(
                        f"derived {name}: {value!r} is not one of its values ({', '.join(allowed)})"
                    )


class Politeness(Strict):
    download_delay: float | None = Field(None, ge=0, le=60)
    concurrent_per_domain: int | None = Field(None, ge=1, le=64)
    autothrottle: bool | None = None

    def scrapy_settings(self) -> dict[str, Any]:
        names = {
            "download_delay": "DOWNLOAD_DELAY",
            "concurrent_per_domain": "CONCURRENT_REQUESTS_PER_DOMAIN",
            "autothrottle": "AUTOTHROTTLE_ENABLED",
        }
        return {names[k]: v for k, v in self.model_dump().items() if v is not None}


FINDERS = ("css", "xpath", "jsonld", "script", "path")


class Extract(Strict):
    """How one field is found (crawlstore.crawl.extract): one finder, then regex and default."""

    css: str | None = None
    xpath: str | None = None
    jsonld: str | None = Field(None, description="dotted path into the page's JSON-LD objects")
    script: str | None = Field(None, description="CSS selector of a <script> holding JSON (with `path`)")
    path: str | None = Field(None, description="dotted path into a JSON API record, or into `script`'s JSON")
    regex: str | None = Field(None, description="keep the first group (or the whole match)")
    default: str | int | float | bool | None = Field(None, description="when nothing is found")

    @property
    def finder(self) -> str:
        if self.script is not None:
            return "script"
        return next(k for k in FINDERS if getattr(self, k) is not None)

    @model_validator(mode="after")
    def _one_finder(self) -> Extract:
        given = [k for k in FINDERS if getattr(self, k) is not None and not (k == "path" and self.script)]
        if len(given) != 1:
            listed = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of {', '.join(FINDERS)} (given: {listed})")
        if self.script is not None and self.path is None:
            raise ValueError("`script` needs `path`, the dotted path into the script's JSON")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} is not a regular expression: {exc}") from exc
        return self


POLL_PARAMS = frozenset({"data_interval_start", "data_interval_end"})


class Poll(Strict):
    """Keep polling instead of crawling once per run: each poll validated and published at once."""

    every_s: float = Field(ge=1, le=3600, description="seconds from one poll to the next")
    run_s: int = Field(600, ge=10, le=86_400, description="how long one run polls (the next run goes on)")
    window_s: int = Field(3600, ge=1, le=86_400, description="the longest window one poll asks for")
    lag_s: float = Field(0, ge=0, le=3600, description="windows end this long before now (late records)")

    @model_validator(mode="after")
    def _runs_poll(self) -> Poll:
        if self.run_s < self.every_s:
            raise ValueError(
                f"run_s ({self.run_s}) is shorter than every_s ({self.every_s:g}): a run would poll once"
            )
        return self


class SourceSpec(Strict):
    source: str
    kind: str
    topic: str
    spider: Literal["catalogue", "json_api"]
    start_url: str = Field(min_length=1, max_length=4096)
    schedule: str = Field(min_length=1, max_length=200)
    description: str = ""
    extract: dict[str, str | Extract]
    politeness: Politeness = Politeness()
    poll: Poll | None = None

    @field_validator("extract", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        """Each rule validated here, so a mistake names its field rather than union branches."""
        if not isinstance(value, dict):
            return value
        rules: dict[str, Any] = {}
        for key, rule in value.items():
            if isinstance(rule, str):
                rules[key] = rule
            elif isinstance(rule, dict):
                try:
                    rules[key] = Extract.model_validate(rule)
                except ValidationError as exc:
                    reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
                    raise ValueError(f"{key}: {reasons}") from None
            else:
                raise ValueError(
                    f"{key}: a selector string or a rule ({', '.join(FINDERS)}, regex, default), "
                    f"not {type(rule).__name__}"
                )
        return rules

    @model_validator(mode="after")
    def _names(self) -> SourceSpec:
        _name(self.source, "source")
        if self.poll is not None:
            if self.spider != "json_api" or self.schedule != "@continuous":
                raise ValueError(
                    "a polling source (`poll`) is a json_api source with schedule @continuous: "
                    "one run polls for poll.run_s seconds, then the next run takes over"
                )
            params = {p for p in TEMPLATE_PART.findall(self.start_url) if not p.isupper()}
            if params != POLL_PARAMS:
                has = ", ".join(sorted(params)) or "none"
                raise ValueError(
                    "a polling source's start_url takes the window as {data_interval_start} and "
                    f"{{data_interval_end}} and no other run parameter (it has: {has})"
                )
        return self


# How the HDFS sink lays out a topic's files: `{root}` is CONSUMER_HDFS_ROOT, `{topic}` the topic,
# `{name}` the topic without the family's prefix, `{date}` the records' day (YYYY-MM-DD).
DEFAULT_HDFS_PATH = "{root}/{topic}/dt={date}"
HDFS_PLACEHOLDERS = frozenset({"root", "topic", "name", "date"})
HDFS_LITERAL = re.compile(r"^[A-Za-z0-9._=-]*$")
HDFS_DIR = re.compile(r"^[A-Za-z0-9._-]*$")
TOPIC_FAMILY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,8}(\.\*)?$")


class HdfsLayout(Strict):
    path: str = Field(DEFAULT_HDFS_PATH, max_length=500, description="directory of a day's files")
    format: Literal["jsonl", "parquet"] = Field("jsonl", description="jsonl, or parquet typed by the kind")

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        """Absolute; `{root}` only first, `{date}` in the last segment; literal parts are plain names."""
        segments = value.split("/")
        if not value.startswith(("/", "{root}")) or value.endswith("/") or "//" in value:
            raise ValueError(f"{value!r} must be an absolute directory (starting with / or {{root}})")
        parts = segments[1:] if value.startswith("/") else segments
        for i, segment in enumerate(parts):
            names = TEMPLATE_PART.findall(segment)
            unknown = sorted(set(names) - HDFS_PLACEHOLDERS)
            if unknown:
                raise ValueError(
                    f"{value!r}: unknown placeholder(s) {', '.join(unknown)}; allowed: "
                    + ", ".join(f"{{{p}}}" for p in sorted(HDFS_PLACEHOLDERS))
                )
            literal = TEMPLATE_PART.sub("", segment)
            last = i == len(parts) - 1
            if not (HDFS_LITERAL if last else HDFS_DIR).fullmatch(literal) or segment in {"", ".", ".."}:
                allowed = "A-Z a-z 0-9 . _ = -" if last else "A-Z a-z 0-9 . _ - (= only in the day segment)"
                raise ValueError(f"{value!r}: segment {segment!r} may hold only {allowed} and placeholders")
            if "root" in names and (i != 0 or segment != "{root}"):
                raise ValueError(f"{value!r}: {{root}} can only be the whole first segment")
        if len(segments) < (3 if value.startswith("/") else 2):
            raise ValueError(
                f"{value!r}: the day segment needs a directory above it, e.g. /raw/{{name}}/{{date}}"
            )
        if value.count("{date}") != 1 or "{date}" not in segments[-1]:
            raise ValueError(f"{value!r}: {{date}} must appear once, in the last segment (e.g. dt={{date}})")
        if "{topic}" not in value and "{name}" not in value:
            raise ValueError(f"{value!r}: name the topic ({{topic}} or {{name}}) so topics keep apart")
        return value


class TopicsSpec(Strict):
    """Settings of a topic, or of every topic under a prefix (`coin.raw.*`), for the consumers."""

    family: str
    topics: str = Field(description="a topic (`crawl.readings`) or a prefix with `.*` (`coin.raw.*`)")
    description: str = ""
    hdfs: HdfsLayout = HdfsLayout()

    @field_validator("topics")
    @classmethod
    def _topic_or_prefix(cls, value: str) -> str:
        if not TOPIC_FAMILY.fullmatch(value):
            raise ValueError(
                f"{value!r} must be a topic (lower-case dotted words) or a prefix ending in `.*`"
            )
        return value

    @property
    def prefix(self) -> str | None:
        """`coin.raw.` for `coin.raw.*`; None for a single topic."""
        return self.topics[:-1] if self.topics.endswith(".*") else None

    def covers(self, topic: str) -> bool:
        """The topic itself, or a pipeline topic under the prefix (never a `-dlq` twin: no `-`)."""
        prefix = self.prefix
        if prefix is None:
            return topic == self.topics
        return (
            topic.startswith(prefix) and TOPIC_FAMILY.fullmatch(topic) is not None and not topic.endswith("*")
        )

    def name_of(self, topic: str) -> str:
        """The topic without the family's prefix (the whole topic for a single-topic family)."""
        prefix = self.prefix
        return topic[len(prefix) :] if prefix is not None else topic

    @model_validator(mode="after")
    def _names(self) -> TopicsSpec:
        _name(self.family, "family")
        return self

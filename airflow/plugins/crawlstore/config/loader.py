"""Reading the configuration folder: `kinds/<kind>.yaml`, `sources/<source>.yaml` and, optionally,
`topics/<family>.yaml` (how the consumers treat a topic or every topic under a prefix).

All or nothing: every problem in every file is collected and raised together as ConfigError,
each naming its file and key, so Airflow shows them as the DAG file's import error and
`python -m crawlstore.config check` prints them; nothing is ever half loaded.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from crawlstore.config.models import COMMON_FIELDS, HdfsLayout, KindSpec, SourceSpec, TopicsSpec

CONFIG_ENV = "CRAWLSTORE_CONFIG_DIR"
# Inside the DAG bundle, so Airflow and the consumers (same image, same checkout) read the same files.
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "dags" / "config"
# Selector keys that are not item fields, by spider.
NAVIGATION_KEYS: dict[str, frozenset[str]] = {
    "catalogue": frozenset({"item_links", "next_page"}),
    "json_api": frozenset({"records", "next_page"}),
}
# A pipeline topic: lower-case dotted words. No `-`, so it can never be a `-dlq` or `-dlq-parking` twin.
TOPIC = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,8}$")
MAX_TOPIC = 200
MAX_FILE_BYTES = 1_000_000
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """The configuration has problems; `problems` lists each as `<file>: <key>: <what>`."""

    def __init__(self, directory: Path, problems: list[str]) -> None:
        self.directory = directory
        self.problems = problems
        super().__init__(
            f"configuration {directory} has {len(problems)} problem(s):\n"
            + "\n".join(f"  {p}" for p in problems)
        )


@dataclass(frozen=True)
class Config:
    """The loaded configuration: kinds, sources and topic families by name, in file-name order."""

    directory: Path
    kinds: dict[str, KindSpec]
    sources: dict[str, SourceSpec]
    families: dict[str, TopicsSpec] = field(default_factory=dict)

    @property
    def topics(self) -> tuple[str, ...]:
        """The pipeline topics, sorted."""
        return tuple(sorted({s.topic for s in self.sources.values()}))

    def family_of(self, topic: str) -> TopicsSpec | None:
        """The most specific family covering `topic`: the topic itself, else the longest prefix."""
        covering = [f for f in self.families.values() if f.covers(topic)]
        return max(covering, key=lambda f: (f.prefix is None, len(f.topics)), default=None)

    def hdfs_layout(self, topic: str) -> tuple[HdfsLayout, str]:
        """How HDFS lays out `topic`'s files, and the topic's `{name}` there."""
        family = self.family_of(topic)
        return (family.hdfs, family.name_of(topic)) if family else (HdfsLayout(), topic)

    def subscription(self) -> tuple[tuple[str, ...], str | None]:
        """What the consumers follow by default: the declared topics by name or, when a family
        covers a prefix, one pattern of those topics and every topic under each prefix (so a new
        topic there is picked up without a restart). Never a `-dlq` twin: no `-` in the pattern."""
        prefixes = sorted({f.prefix for f in self.families.values() if f.prefix})
        if not prefixes:
            return self.topics, None
        names = [re.escape(t) for t in self.topics if not any(t.startswith(p) for p in prefixes)]
        names += [re.escape(p) + r"[a-z0-9_]+(\.[a-z0-9_]+)*" for p in prefixes]
        return (), "^(" + "|".join(names) + ")$"

    def kind_of_topic(self, topic: str) -> KindSpec:
        for source in self.sources.values():
            if source.topic == topic:
                return self.kinds[source.kind]
        raise KeyError(f"no source publishes to {topic!r}")


def config_dir() -> Path:
    """CRAWLSTORE_CONFIG_DIR, or the folder bundled with the DAGs."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_DIR)


def current() -> Config:
    """The configuration of this process (read once per folder)."""
    return load(config_dir())


@functools.cache
def load(directory: Path) -> Config:
    problems: list[str] = []
    if not directory.is_dir():
        raise ConfigError(directory, [f"{directory}: not a folder (set {CONFIG_ENV})"])
    kinds = dict(_read_all(directory, "kinds", KindSpec, "kind", problems))
    sources = dict(_read_all(directory, "sources", SourceSpec, "source", problems))
    families = dict(_read_all(directory, "topics", TopicsSpec, "family", problems))
    if not kinds and not any(p.startswith("kinds/") for p in problems):
        problems.append("kinds/: no kind declared (one <kind>.yaml per item kind)")
    if not sources and not any(p.startswith("sources/") for p in problems):
        problems.append("sources/: no source declared (one <source>.yaml per source)")
    problems += _cross_check(kinds, sources, failed_kinds=_named_in(problems, "kinds/"))
    seen: dict[str, str] = {}
    for name, family in families.items():
        if family.prefix is None and family.topics not in {src.topic for src in sources.values()}:
            problems.append(
                f"topics/{name}.yaml: topics: no source publishes to {family.topics!r} "
                f"(sources' topics: {', '.join(sorted({src.topic for src in sources.values()}))}; "
                "or a prefix ending in .*)"
            )
        other = seen.setdefault(family.topics, name)
        if other != name:
            problems.append(f"topics/{name}.yaml: topics: {family.topics!r} is declared by {other}.yaml too")
    if problems:
        raise ConfigError(directory, problems)
    return Config(directory, kinds, sources, families)


def _named_in(problems: list[str], folder: str) -> set[str]:
    return {p[len(folder) :].split(".yaml", 1)[0] for p in problems if p.startswith(folder)}


def _read_all(
    directory: Path, folder: str, model: type[M], name_key: str, problems: list[str]
) -> Iterator[tuple[str, M]]:
    for path in sorted((directory / folder).glob("*")):
        where = f"{folder}/{path.name}"
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix not in (".yaml", ".yml"):
            problems.append(f"{where}: not a .yaml file (only <{name_key}>.yaml files belong here)")
            continue
        data = _read_yaml(path, where, problems)
        if data is None:
            continue
        try:
            spec = model.model_validate(data)
        except ValidationError as exc:
            problems += [f"{where}: {_loc(e['loc'])}: {_message(e)}" for e in exc.errors()]
            continue
        name = getattr(spec, name_key)
        if path.stem != name:
            problems.append(
                f"{where}: {name_key}: {name!r} is declared in a file named {path.name!r}; "
                f"name the file {name}.yaml"
            )
            continue
        yield name, spec


def _read_yaml(path: Path, where: str, problems: list[str]) -> dict[str, Any] | None:
    if path.stat().st_size > MAX_FILE_BYTES:
        problems.append(f"{where}: larger than {MAX_FILE_BYTES} bytes")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problems.append(f"{where}: not valid YAML: {at}{getattr(exc, 'problem', None) or exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{where}: the file must hold a mapping of keys, not {type(data).__name__}")
        return None
    return data


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _message(error: Any) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _cross_check(
    kinds: dict[str, KindSpec], sources: dict[str, SourceSpec], failed_kinds: set[str]
) -> list[str]:
    problems: list[str] = []
    topic_kinds: dict[str, str] = {}
    for name, source in sources.items():
        where = f"sources/{name}.yaml"
        kind = kinds.get(source.kind)
        if kind is None:
            if source.kind not in failed_kinds:
                problems.append(
                    f"{where}: kind: {source.kind!r} is not a declared kind "
                    f"({', '.join(kinds) or 'none'}; one kinds/<kind>.yaml each)"
                )
            continue
        if not TOPIC.fullmatch(source.topic) or len(source.topic) > MAX_TOPIC:
            problems.append(
                f"{where}: topic: {source.topic!r} must be lower-case dotted words "
                f"({TOPIC.pattern}, at most {MAX_TOPIC} characters; its twins add -dlq)"
            )
        other = topic_kinds.setdefault(source.topic, source.kind)
        if other != source.kind:
            problems.append(
                f"{where}: topic: {source.topic!r} already carries kind {other!r}; one topic carries one kind"
            )
        navigation = NAVIGATION_KEYS[source.spider]
        fields = set(kind.fields) - set(COMMON_FIELDS) - set(kind.derived)  # the derived are not extracted
        for key in sorted(set(source.extract) - fields - navigation):
            problems.append(
                f"{where}: extract.{key}: neither a field of kind {kind.kind} "
                f"({', '.join(sorted(fields))}) nor one of {', '.join(sorted(navigation))}"
            )
        for key, rule in source.extract.items():
            if isinstance(rule, str):
                continue
            if key in navigation:
                problems.append(f"{where}: extract.{key}: a navigation key takes a plain selector")
            elif (rule.finder == "path") != (source.spider == "json_api"):
                allowed = "path" if source.spider == "json_api" else "css, xpath, jsonld, script"
                problems.append(f"{where}: extract.{key}: a {source.spider} source finds values by {allowed}")
        if source.spider == "catalogue" and "item_links" not in source.extract:
            problems.append(
                f"{where}: extract.item_links: a catalogue source needs it (the detail page links)"
            )
    return problems

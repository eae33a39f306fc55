"""The configured sources (crawlstore.config, `sources/<name>.yaml`): what to crawl, with which
spider, into which topic, how often. One DAG `crawl_<name>` per source.

A source's `start_url` may hold placeholders resolved when a crawl runs, never at import:
`{UPPER_CASE}` from the environment (e.g. `{DEMO_SITE_URL}`), `{lower_case}` from the run's
parameters (e.g. `{data_interval_end}`, which the DAG passes from its context).

Catalogue selectors (CSS, or XPath when prefixed with `xpath:`):
  `item_links` - on a listing page, the hrefs of the detail pages;
  `next_page`  - on a listing page, the href of the next listing page (optional);
  any item field - on a detail page. A selector ending in `::text` / `text()` yields the joined
  text of all matched nodes; others yield the first match.
JSON API selectors (dotted paths into the JSON, `a.b.0`):
  `records`   - where the list of records is (optional; default: the response is the list);
  `next_page` - the URL of the next page of records (optional);
  any item field - where each record keeps it (e.g. `device_id: DeviceId`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote

from crawlstore.config import NAVIGATION_KEYS, SourceSpec, current
from crawlstore.config.models import Extract

SpiderName = Literal["catalogue", "json_api"]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Source:
    """One crawl source; becomes one DAG (`crawl_<name>`)."""

    name: str
    kind: str
    topic: str
    spider: SpiderName
    start_url: str
    schedule: str
    description: str
    # Per field (crawlstore.crawl.extract): a selector string, or a mapping of finder, regex, default.
    selectors: Mapping[str, Any] = field(default_factory=dict)
    # Scrapy settings for this source only (politeness that suits the site), over the defaults.
    crawl_settings: Mapping[str, Any] = field(default_factory=dict)
    # A polling source (schedule @continuous): seconds between polls, of one run, widest window.
    poll: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Read-only views, so a frozen source stays unchanged.
        object.__setattr__(self, "selectors", MappingProxyType(dict(self.selectors)))
        object.__setattr__(self, "crawl_settings", MappingProxyType(dict(self.crawl_settings)))
        if self.poll is not None:
            object.__setattr__(self, "poll", MappingProxyType(dict(self.poll)))

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def field_selectors(self) -> dict[str, Any]:
        """Selectors of item fields (navigation keys left out)."""
        return {k: v for k, v in self.selectors.items() if k not in NAVIGATION_KEYS[self.spider]}

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> Source:
        return cls(
            name=spec.source,
            kind=spec.kind,
            topic=spec.topic,
            spider=spec.spider,
            start_url=spec.start_url,
            schedule=spec.schedule,
            description=spec.description,
            selectors={k: _rule(v) for k, v in spec.extract.items()},
            crawl_settings=spec.politeness.scrapy_settings(),
            poll=spec.poll.model_dump() if spec.poll else None,
        )

    @property
    def params(self) -> frozenset[str]:
        """Run parameters the start URL needs (its lower-case placeholders)."""
        return frozenset(n for n in _PLACEHOLDER.findall(self.start_url) if not n.isupper())

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["selectors"] = dict(self.selectors)
        data["crawl_settings"] = dict(self.crawl_settings)
        data["poll"] = dict(self.poll) if self.poll is not None else None
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Source:
        return cls(**json.loads(text))


def _rule(rule: str | Extract) -> Any:
    return rule if isinstance(rule, str) else rule.model_dump(exclude_none=True)


def resolve_start_url(
    source: Source, params: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The start URL with its placeholders filled; ValueError naming whatever is missing.

    Parameter values are URL-quoted (they are data, e.g. `+00:00`); environment values are not
    (they are base URLs).
    """
    params = params or {}
    environ = os.environ if environ is None else environ
    missing: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.isupper():
            if name in environ:
                return environ[name].rstrip("/")
        elif name in params:
            return quote(str(params[name]), safe="")
        missing.append(name)
        return match.group(0)

    url = _PLACEHOLDER.sub(fill, source.start_url)
    if missing:
        where = ", ".join(
            f"environment variable {n}" if n.isupper() else f"run parameter {n!r}" for n in missing
        )
        raise ValueError(f"source {source.name}: start_url {source.start_url!r} needs {where}")
    return url


def with_start_url(source: Source, url: str) -> Source:
    """A copy of `source` crawling `url` instead (a resolved URL, or another site in tests)."""
    return replace(source, start_url=url)


SOURCES: tuple[Source, ...] = tuple(Source.from_spec(spec) for spec in current().sources.values())


def get_source(name: str) -> Source:
    for source in SOURCES:
        if source.name == name:
            return source
    raise KeyError(f"no source named {name!r}; known: {[s.name for s in SOURCES]}")

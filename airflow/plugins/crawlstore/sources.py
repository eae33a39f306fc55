"""The configured sources: what to crawl, with which spider, into which topic, how often.

Pure declarations (DAG files import this at parse time: no I/O, no environment lookups here).
A source's `start_url` may hold placeholders resolved when a crawl runs, never at import:
`{UPPER_CASE}` from the environment (e.g. `{DEMO_SITE_URL}`), `{lower_case}` from the run's
parameters (e.g. `{data_interval_end}`, which the DAG passes from its context).

To crawl your own site, add a `Source` with its URL and selectors; the spiders hold no
site-specific logic.

Catalogue selectors (CSS, or XPath when prefixed with `xpath:`):
  `item_links` - on a listing page, the hrefs of the detail pages;
  `next_page`  - on a listing page, the href of the next listing page (optional);
  any item field (`product_id`, `name`, `price`, ...) - on a detail page. A selector ending in
  `::text` / `text()` yields the joined text of all matched nodes; others yield the first match.
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

from crawlstore.items import ITEM_TYPES
from crawlstore.topics import PIPELINE_TOPICS

SpiderName = Literal["catalogue", "json_api"]
SPIDERS: tuple[str, ...] = ("catalogue", "json_api")
# Selector keys that are not item fields, by spider.
NAVIGATION_KEYS: dict[str, frozenset[str]] = {
    "catalogue": frozenset({"item_links", "next_page"}),
    "json_api": frozenset({"records", "next_page"}),
}
# Fields the spiders fill themselves.
_SPIDER_FIELDS = frozenset({"source", "crawled_at"})
_NAME = re.compile(r"[a-z][a-z0-9_]*")
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
    selectors: Mapping[str, str] = field(default_factory=dict)
    # Scrapy settings for this source only (politeness that suits the site), over the defaults.
    crawl_settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"source name {self.name!r} must match [a-z][a-z0-9_]*")
        if self.kind not in ITEM_TYPES:
            raise ValueError(f"source {self.name}: kind {self.kind!r} is not one of {sorted(ITEM_TYPES)}")
        if self.topic not in PIPELINE_TOPICS:
            raise ValueError(f"source {self.name}: topic {self.topic!r} is not one of {PIPELINE_TOPICS}")
        if self.spider not in SPIDERS:
            raise ValueError(f"source {self.name}: spider {self.spider!r} is not one of {SPIDERS}")
        item_fields = set(ITEM_TYPES[self.kind].model_fields) - _SPIDER_FIELDS
        unknown = set(self.selectors) - item_fields - NAVIGATION_KEYS[self.spider]
        if unknown:
            raise ValueError(
                f"source {self.name}: selectors {sorted(unknown)} are neither {self.kind} fields "
                f"nor {sorted(NAVIGATION_KEYS[self.spider])}"
            )
        if self.spider == "catalogue" and "item_links" not in self.selectors:
            raise ValueError(f"source {self.name}: a catalogue source needs an `item_links` selector")
        # Read-only views, so a frozen source stays unchanged.
        object.__setattr__(self, "selectors", MappingProxyType(dict(self.selectors)))
        object.__setattr__(self, "crawl_settings", MappingProxyType(dict(self.crawl_settings)))

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def field_selectors(self) -> dict[str, str]:
        """Selectors of item fields (navigation keys left out)."""
        return {k: v for k, v in self.selectors.items() if k not in NAVIGATION_KEYS[self.spider]}

    @property
    def params(self) -> frozenset[str]:
        """Run parameters the start URL needs (its lower-case placeholders)."""
        return frozenset(n for n in _PLACEHOLDER.findall(self.start_url) if not n.isupper())

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["selectors"] = dict(self.selectors)
        data["crawl_settings"] = dict(self.crawl_settings)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Source:
        return cls(**json.loads(text))


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


# The demo site is ours and runs next to the crawler: no delay needed. Sites you don't own
# keep the polite defaults of crawlstore.crawl.settings.
_LOCAL_DEMO_SETTINGS: Mapping[str, Any] = {
    "DOWNLOAD_DELAY": 0,
    "AUTOTHROTTLE_ENABLED": False,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 8,
}

DEMO_SHOP = Source(
    name="demo_shop",
    kind="product",
    topic="crawl.products",
    spider="catalogue",
    start_url="{DEMO_SITE_URL}/catalogue/page/1.html",
    schedule="@daily",
    description="Products of the bundled demo shop (HTML catalogue, ~1,200 products).",
    selectors={
        "item_links": "ol.product-list a.product-link::attr(href)",
        "next_page": "nav.pager li.next a::attr(href)",
        "product_id": "td.sku::text",
        "name": "h1.product-name::text",
        "brand": "td.brand::text",
        "category": "td.category::text",
        "price": ".offer .price-regular::text",
        "sale_price": ".offer .price-sale::text",
        "currency": "meta[itemprop=priceCurrency]::attr(content)",
        "image_url": "img.product-image::attr(src)",
        "rating": ".reviews .rating-value::text",
        "review_count": ".reviews .review-count::text",
    },
    crawl_settings=_LOCAL_DEMO_SETTINGS,
)

DEMO_SENSORS = Source(
    name="demo_sensors",
    kind="reading",
    topic="crawl.readings",
    spider="json_api",
    start_url="{DEMO_SITE_URL}/api/readings?since={data_interval_start}&until={data_interval_end}",
    schedule="@hourly",
    description="Readings of the demo FMS sensor API (5 devices, one reading a minute each).",
    selectors={
        "device_id": "DeviceId",
        "sensor1": "sensor1",
        "sensor2": "sensor2",
        "sensor3": "sensor3",
        "motor1": "motor1",
        "motor2": "motor2",
        "motor3": "motor3",
        "is_fail": "isFail",
        "measured_at": "time",
    },
    crawl_settings=_LOCAL_DEMO_SETTINGS,
)

SOURCES: tuple[Source, ...] = (DEMO_SHOP, DEMO_SENSORS)


def get_source(name: str) -> Source:
    for source in SOURCES:
        if source.name == name:
            return source
    raise KeyError(f"no source named {name!r}; known: {[s.name for s in SOURCES]}")

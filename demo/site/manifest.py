"""What the pipeline should make of the demo site's items: which reach Kafka, which are
dead-lettered and for which fields. Tests across the project assert against this."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from crawlstore.items import item_type
from demo.site import catalogue, coin_news, coins, sensors


@dataclass(frozen=True)
class Outcomes:
    """Expected validation outcomes for one item kind.

    `valid`: natural ids of the items that pass. `invalid`: label -> the item fields that make
    it fail (a label is the item's id, or a stable stand-in when the id itself is broken, see
    `label_of`). `not_crawled`: labels of items listed on the site that an obedient crawler
    never fetches (robots.txt).
    """

    valid: frozenset[str]
    invalid: Mapping[str, frozenset[str]]
    not_crawled: frozenset[str] = field(default_factory=frozenset)

    @property
    def total(self) -> int:
        """How many items a complete crawl yields."""
        return len(self.valid) + len(self.invalid)


def _product_outcomes() -> Outcomes:
    valid = frozenset(p.product_id for p in catalogue.products() if not p.invalid and p.product_id)
    invalid = {p.label: p.invalid for p in catalogue.products() if p.invalid}
    return Outcomes(valid, MappingProxyType(invalid), frozenset({catalogue.ROBOTS_BLOCKED.label}))


def _reading_outcomes(since: datetime, until: datetime) -> Outcomes:
    readings = list(sensors.readings(since, until))
    valid = frozenset(r.label for r in readings if not r.invalid)
    invalid = {r.label: r.invalid for r in readings if r.invalid}
    return Outcomes(valid, MappingProxyType(invalid))


def _quote_outcomes(since: datetime, until: datetime) -> Outcomes:
    quotes = list(coins.quotes(since, until))
    valid = frozenset(q.label for q in quotes if not q.invalid)
    invalid = {q.label: q.invalid for q in quotes if q.invalid}
    return Outcomes(valid, MappingProxyType(invalid))


def _article_outcomes() -> Outcomes:
    articles = coin_news.articles()
    valid = frozenset(a.label for a in articles if not a.invalid)
    invalid = {a.label: a.invalid for a in articles if a.invalid}
    return Outcomes(valid, MappingProxyType(invalid))


def expected_outcomes(
    since: datetime = sensors.DEMO_SINCE, until: datetime = sensors.DEMO_UNTIL
) -> dict[str, Outcomes]:
    """Outcomes by item kind ("product", "reading", "coin_quote", "news_article"); readings and
    quotes for the API window [since, until)."""
    return {
        "product": _product_outcomes(),
        "reading": _reading_outcomes(since, until),
        "coin_quote": _quote_outcomes(since, until),
        "news_article": _article_outcomes(),
    }


def label_of(kind: str, item: Mapping[str, Any]) -> str:
    """The manifest's name for a crawled item dict (as found in the crawl output or a DLQ record).

    Products: the slug of their page URL (equal to the id for every product whose id is usable).
    Readings: the reading id, or `device@time` from the raw values when no id could be built.
    Coin quotes: likewise the quote id, or `market@time`.
    News articles: the id in their page URL (`n1001` for .../n1001-some-headline.html), equal to
    the article id for every article whose id is usable.
    """
    if kind == "product":
        path = urlsplit(str(item.get("url", ""))).path
        return path.rsplit("/", 1)[-1].removesuffix(".html")
    if kind == "reading":
        return sensors.label_of_reading(dict(item))
    if kind == "coin_quote":
        return coins.label_of_quote(dict(item))
    if kind == "news_article":
        return coin_news.label_of_article_url(urlsplit(str(item.get("url", ""))).path)
    raise ValueError(f"unknown item kind {kind!r}")


def failing_fields(kind: str, item: Mapping[str, Any]) -> frozenset[str]:
    """The fields that make `item` fail validation as `kind` (empty: it is valid).

    A whole-item check (sale price above price) counts as the fields its message names, so
    the result compares directly with `Outcomes.invalid`.
    """
    model = item_type(kind)
    try:
        model.model_validate(dict(item))
    except ValidationError as exc:
        fields: set[str] = set()
        for error in exc.errors():
            if error["loc"]:
                fields.add(str(error["loc"][0]))
            else:
                fields |= {f for f in model.model_fields if re.search(rf"\b{f}\b", error["msg"])}
        return frozenset(fields)
    return frozenset()

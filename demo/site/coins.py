"""The demo crypto market's ticker API: five KRW markets, one quote per market per minute.

`/api/coins/ticker?since=ISO&until=ISO` serves the quotes of a window. They are shaped like
Upbit's ticker (`market`, `trade_price`, `prev_closing_price`, `high_price`, `low_price`,
`change`, `signed_change_rate`, `acc_trade_volume_24h`), except that `timestamp` is ISO 8601
text: Upbit sends epoch milliseconds, the crawl reads ISO 8601 (or epoch seconds). A quote is a
pure function of its market and minute; edge cases sit at fixed minutes of every hour (1..11),
so every one-hour window holds each of them exactly once. The news site about these coins is
demo.site.coin_news.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from crawlstore.items import item_type, render_key
from demo.site.sensors import minute_slots

SEED = 20250614
MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-SOL", "KRW-XRP", "KRW-ADA")
KST = timezone(timedelta(hours=9))
# Where each market's price swings around, and its daily turnover (KRW, mid-2025).
_BASE = {"KRW-BTC": 145e6, "KRW-ETH": 3.6e6, "KRW-SOL": 215e3, "KRW-XRP": 3e3, "KRW-ADA": 920.0}
_TURNOVER = {"KRW-BTC": 250e9, "KRW-ETH": 150e9, "KRW-SOL": 60e9, "KRW-XRP": 300e9, "KRW-ADA": 40e9}
# Upbit's KRW price units: (from this price, the tick).
_TICKS = ((1_000_000, "1000"), (100_000, "50"), (10_000, "10"), (1_000, "1"), (0, "0.1"))


def quote_id(market: str, quoted_at: datetime) -> str:
    """The key the crawl gives a quote (the coin_quote kind's key template)."""
    key = item_type("coin_quote").spec.key
    assert not isinstance(key, str)
    return render_key(key.template, {"market": market, "quoted_at": quoted_at})


@dataclass(frozen=True)
class DemoQuote:
    """One ticker record and the item a faithful crawler makes of it (no source/crawled_at)."""

    market: str
    slot: datetime
    record: dict[str, Any]
    expected: dict[str, Any]
    invalid: frozenset[str] = field(default_factory=frozenset)
    note: str = ""

    @property
    def label(self) -> str:
        return label_of_quote(self.expected)


def label_of_quote(item: dict[str, Any]) -> str:
    """A quote's natural id, or `market@time` (raw values) when no id could be built."""
    qid = item.get("quote_id")
    if isinstance(qid, str) and qid:
        return qid
    return f"{item.get('market')}@{item.get('quoted_at')}"


def _iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def level(market: str, moment: datetime) -> float:
    """The market's smooth price level at `moment`: drifts over days, swings over hours."""
    minutes = moment.timestamp() / 60
    phase = MARKETS.index(market)
    swing = 0.04 * math.sin(2 * math.pi * minutes / (6.1 * 1440) + phase)
    swing += 0.006 * math.sin(2 * math.pi * minutes / 97 + 2 * phase)
    return _BASE[market] * math.exp(swing)


def _on_tick(value: float, rounding: str) -> Decimal:
    price = Decimal(repr(value))
    tick = next(Decimal(t) for floor, t in _TICKS if price >= floor)
    return (price / tick).to_integral_value(rounding) * tick


def _ordinary(market: str, slot: datetime) -> DemoQuote:
    # A string seed is hashed with SHA-512, so values don't depend on PYTHONHASHSEED.
    rng = random.Random(f"{SEED}:{market}:{int(slot.timestamp())}")  # noqa: S311 (demo data)
    prev = _on_tick(level(market, slot.replace(hour=0, minute=0)), ROUND_HALF_EVEN)
    trade = _on_tick(level(market, slot) * (1 + rng.gauss(0, 0.0008)), ROUND_HALF_EVEN)
    high = _on_tick(float(max(trade, prev)) * (1 + rng.uniform(0.001, 0.01)), ROUND_CEILING)
    low = _on_tick(float(min(trade, prev)) * (1 - rng.uniform(0.001, 0.01)), ROUND_FLOOR)
    change = "RISE" if trade > prev else "FALL" if trade < prev else "EVEN"
    rate = float(((trade - prev) / prev).quantize(Decimal("1e-8")))
    volume = round(rng.uniform(0.7, 1.3) * _TURNOVER[market] / _BASE[market], 8)
    record: dict[str, Any] = {
        "market": market,
        "trade_price": float(trade),
        "prev_closing_price": float(prev),
        "high_price": float(high),
        "low_price": float(low),
        "change": change,
        "signed_change_rate": rate,
        "acc_trade_volume_24h": volume,
        "timestamp": _iso_z(slot),
    }
    expected: dict[str, Any] = {
        "quote_id": quote_id(market, slot),
        **{k: record[k] for k in ("market", "change", "signed_change_rate", "acc_trade_volume_24h")},
        # Decimals come out of the crawl as exact text, the way the JSON number is written.
        **{k: repr(record[k]) for k in ("trade_price", "prev_closing_price", "high_price", "low_price")},
        "quoted_at": slot.isoformat(),
    }
    return DemoQuote(market, slot, record, expected)


_Edit = Callable[[DemoQuote], DemoQuote]


def _edge(
    change: Callable[[DemoQuote], tuple[dict[str, Any], dict[str, Any]]], invalid: set[str], note: str
) -> _Edit:
    """A change to an ordinary quote: (record values, expected values); record keys mapped to
    `...` are removed."""

    def apply(base: DemoQuote) -> DemoQuote:
        record, expected = change(base)
        rec = {k: v for k, v in {**base.record, **record}.items() if v is not ...}
        return DemoQuote(base.market, base.slot, rec, {**base.expected, **expected}, frozenset(invalid), note)

    return apply


def _swapped(q: DemoQuote) -> tuple[dict[str, Any], dict[str, Any]]:
    high, low = q.record["high_price"], q.record["low_price"]
    return {"high_price": low, "low_price": high}, {"high_price": repr(low), "low_price": repr(high)}


def _as_text(q: DemoQuote) -> tuple[dict[str, Any], dict[str, Any]]:
    text = str(Decimal(repr(q.record["trade_price"])))
    return {"trade_price": text}, {"trade_price": text}


def _unchanged(q: DemoQuote) -> tuple[dict[str, Any], dict[str, Any]]:
    prev = q.record["prev_closing_price"]
    values = {"trade_price": prev, "change": "EVEN", "signed_change_rate": 0.0}
    return values, {**values, "trade_price": repr(prev)}


def _edges(slot: datetime) -> dict[tuple[int, str], _Edit]:
    """Edge cases by (minute of the hour, market)."""
    naive = slot.strftime("%Y-%m-%dT%H:%M:%S")
    return {
        (1, "KRW-BTC"): _edge(
            lambda q: (
                {"trade_price": -q.record["trade_price"]},
                {"trade_price": repr(-q.record["trade_price"])},
            ),
            {"trade_price"},
            "negative price",
        ),
        (2, "KRW-ETH"): _edge(
            lambda q: ({"market": ...}, {"market": None, "quote_id": None}),
            {"market", "quote_id"},
            "market missing, so no quote id either",
        ),
        (3, "KRW-SOL"): _edge(
            lambda q: ({"signed_change_rate": -1.5}, {"signed_change_rate": -1.5}),
            {"signed_change_rate"},
            "change rate below -100%",
        ),
        (4, "KRW-XRP"): _edge(
            lambda q: ({"market": "XRP_KRW"}, {"market": "XRP_KRW", "quote_id": quote_id("XRP_KRW", slot)}),
            {"market"},
            "market in another exchange's notation",
        ),
        (5, "KRW-ADA"): _edge(
            lambda q: ({"timestamp": naive}, {"quoted_at": naive}),
            {"quoted_at"},
            "timestamp without a timezone",
        ),
        (6, "KRW-BTC"): _edge(_swapped, {"high_price", "low_price"}, "high and low swapped"),
        (8, "KRW-SOL"): _edge(_as_text, set(), "price as numeric text: valid"),
        (9, "KRW-XRP"): _edge(
            lambda q: ({"timestamp": slot.astimezone(KST).isoformat()}, {}),
            set(),
            "timestamp in +09:00: valid, normalised to UTC",
        ),
        (10, "KRW-ADA"): _edge(
            lambda q: ({"stream_type": "SNAPSHOT"}, {}), set(), "an extra field the source doesn't map: valid"
        ),
        (11, "KRW-BTC"): _edge(_unchanged, set(), "unchanged since the day began (EVEN, rate 0): valid"),
    }


def quote_at(market: str, slot: datetime) -> DemoQuote:
    """The quote of `market` for the minute `slot` (UTC, whole minute)."""
    base = _ordinary(market, slot)
    edit = _edges(slot).get((slot.minute, market))
    return edit(base) if edit else base


def quotes(since: datetime, until: datetime) -> Iterator[DemoQuote]:
    """Quotes of [since, until), by minute then market."""
    for slot in minute_slots(since, until):
        for market in MARKETS:
            yield quote_at(market, slot)

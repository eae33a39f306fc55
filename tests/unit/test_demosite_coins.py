"""The demo site's crypto market: the ticker API and the news site are deterministic, their pages
escape hostile values, and the manifest agrees with the coin_quote and news_article schemas.
(Determinism across interpreters, robots.txt, 404s and the saved fixtures: test_demosite.py.)"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from crawlstore.items import item_type
from demo.site import (
    DEMO_SINCE,
    DEMO_UNTIL,
    articles,
    coin_news,
    coins,
    expected_outcomes,
    failing_fields,
    label_of,
    quotes,
    render,
)

QuoteItem = item_type("coin_quote")
ArticleItem = item_type("news_article")

pytestmark = pytest.mark.unit

BASE = "http://127.0.0.1:8000"
CRAWLED_AT = "2026-01-01T00:00:00+00:00"
JSONLD = re.compile(r'<script type="application/ld\+json">(.*?)</script>', re.S)

# ------------------------------------------------------------------ ticker


def test_quote_manifest_agrees_with_the_item_schema() -> None:
    outcomes = expected_outcomes()["coin_quote"]
    valid, invalid = set(), {}
    for quote in quotes(DEMO_SINCE, DEMO_UNTIL):
        item = {**quote.expected, "source": "demo_coin_ticker", "crawled_at": CRAWLED_AT}
        fields = failing_fields("coin_quote", item)
        assert fields == quote.invalid, quote.label
        if fields:
            invalid[label_of("coin_quote", item)] = fields
        else:
            valid.add(QuoteItem.model_validate(item).key)
    assert valid == outcomes.valid
    assert invalid == dict(outcomes.invalid)
    assert outcomes.total == 300  # 5 markets x 60 minutes


def test_quote_manifest_names_each_broken_quote() -> None:
    assert dict(expected_outcomes()["coin_quote"].invalid) == {
        "KRW-BTC:20250614T070100": {"trade_price"},
        "None@2025-06-14T07:02:00+00:00": {"market", "quote_id"},
        "KRW-SOL:20250614T070300": {"signed_change_rate"},
        "XRP_KRW:20250614T070400": {"market"},
        "KRW-ADA:20250614T070500": {"quoted_at"},
        "KRW-BTC:20250614T070600": {"high_price", "low_price"},
    }


@pytest.mark.parametrize("offset_minutes", [0, 23, 59])
def test_any_hour_of_quotes_holds_each_edge_case_once(offset_minutes: int) -> None:
    since = DEMO_SINCE + timedelta(hours=30, minutes=offset_minutes)
    outcomes = expected_outcomes(since, since + timedelta(hours=1))["coin_quote"]
    assert outcomes.total == 300
    assert len(outcomes.invalid) == 6


def test_ordinary_quotes_are_valid_over_days_and_prices_sit_on_upbit_ticks() -> None:
    since = datetime(2025, 3, 1, 23, 0, tzinfo=UTC)  # across a day boundary
    for quote in quotes(since, since + timedelta(hours=3)):
        if quote.note:
            continue
        item = {**quote.expected, "source": "demo_coin_ticker", "crawled_at": CRAWLED_AT}
        assert failing_fields("coin_quote", item) == frozenset(), quote.label
        r = quote.record
        assert r["low_price"] <= r["trade_price"] <= r["high_price"]
        trade, prev = r["trade_price"], r["prev_closing_price"]
        assert r["change"] == ("RISE" if trade > prev else "FALL" if trade < prev else "EVEN")
        if quote.market == "KRW-BTC":
            assert r["trade_price"] % 1000 == 0
    # The day's reference price is the same all day, and changes at midnight.
    prev = {
        q.slot.hour: q.record["prev_closing_price"]
        for q in quotes(since, since + timedelta(hours=3))
        if q.market == "KRW-ETH"
    }
    assert prev[23] != prev[0] == prev[1]


def test_ticker_api_returns_the_window_asked_for_and_rejects_bad_windows() -> None:
    page = render("/api/coins/ticker?since=2025-06-14T07:00:00Z&until=2025-06-14T07:02:00Z")
    records = json.loads(page.body)
    assert page.status == 200 and page.content_type.startswith("application/json")
    assert [(r["timestamp"], r["market"]) for r in records[:6]] == [
        ("2025-06-14T07:00:00Z", "KRW-BTC"),
        ("2025-06-14T07:00:00Z", "KRW-ETH"),
        ("2025-06-14T07:00:00Z", "KRW-SOL"),
        ("2025-06-14T07:00:00Z", "KRW-XRP"),
        ("2025-06-14T07:00:00Z", "KRW-ADA"),
        ("2025-06-14T07:01:00Z", "KRW-BTC"),
    ]
    assert len(records) == 10
    assert set(records[0]) == {
        "market", "trade_price", "prev_closing_price", "high_price", "low_price", "change",
        "signed_change_rate", "acc_trade_volume_24h", "timestamp",
    }  # fmt: skip
    # A window starting mid-minute begins at the next whole minute.
    later = json.loads(render("/api/coins/ticker?since=2025-06-14T07:00:30Z&until=2025-06-14T07:02:00Z").body)
    assert len(later) == 5 and later[0]["timestamp"] == "2025-06-14T07:01:00Z"
    now = datetime(2025, 6, 14, 9, 30, 12, tzinfo=UTC)
    assert len(json.loads(render("/api/coins/ticker", now=now).body)) == 300
    for bad in (
        "since=yesterday",
        "since=2025-06-14T07:00:00",
        "since=2025-06-10T00:00:00Z&until=2025-06-14T00:00:00Z",
        "since=2025-06-14T08:00:00Z&until=2025-06-14T07:00:00Z",
    ):
        page = render(f"/api/coins/ticker?{bad}")
        assert page.status == 400, bad
        assert "error" in json.loads(page.body)


def test_a_quote_is_the_same_whatever_window_it_is_fetched_in() -> None:
    slot = datetime(2025, 6, 14, 7, 1, tzinfo=UTC)
    alone = coins.quote_at("KRW-BTC", slot)
    within = next(q for q in quotes(DEMO_SINCE, DEMO_UNTIL) if q.slot == slot and q.market == "KRW-BTC")
    assert alone == within


# ------------------------------------------------------------------ news


def test_news_has_three_listing_pages_linking_every_article_and_the_next_page() -> None:
    listed = articles()
    assert len(listed) == 36 and coin_news.news_page_count() == 3
    assert len({a.slug for a in listed}) == len({a.headline for a in listed}) == 36
    last = coin_news.news_page_count()
    on_pages = []
    for number in range(1, last + 1):
        html = render(f"/coins/news/page/{number}.html").body.decode()
        links = re.findall(r'class="article-link" href="([^"]+)"', html)
        assert links == [f"../{a.slug}.html" for a in coin_news.news_page(number)]
        on_pages += coin_news.news_page(number)
        assert (f'<li class="next"><a href="{number + 1}.html">' in html) == (number < last)
    assert on_pages == list(listed)
    assert render("/coins/news").location == render("/coins/news/").location == "/coins/news/page/1.html"


def test_news_manifest_agrees_with_the_item_schema() -> None:
    outcomes = expected_outcomes()["news_article"]
    valid, invalid = set(), {}
    for article in articles():
        item = {**article.expected_item(BASE, "demo_coin_news"), "crawled_at": CRAWLED_AT}
        fields = failing_fields("news_article", item)
        assert fields == article.invalid, article.label
        if fields:
            invalid[label_of("news_article", item)] = fields
        else:
            valid.add(ArticleItem.model_validate(item).key)
    assert valid == outcomes.valid
    assert invalid == dict(outcomes.invalid)
    assert outcomes.total == 36


def test_news_manifest_covers_the_broken_kinds_and_hostile_values() -> None:
    outcomes = expected_outcomes()["news_article"]
    assert dict(outcomes.invalid) == {
        "n1004": {"headline"},
        "n1008": {"published_at"},
        "n1010": {"headline", "published_at"},
        "n1016": {"sentiment"},
        "n1022": {"published_at", "modified_at"},
        "n1029": {"article_id"},
    }
    hostile = {"n1002", "n1006", "n1014", "n1019", "n1026", "n1033"}
    assert hostile <= outcomes.valid
    by_label = {a.label: a for a in articles()}
    assert {label for label, a in by_label.items() if a.note} == hostile | set(outcomes.invalid)
    assert len(by_label["n1033"].headline or "") == 300


def test_article_pages_embed_a_news_article_in_json_ld() -> None:
    for article in articles()[:12]:
        html = render(article.path).body.decode()
        [block] = JSONLD.findall(html)
        if article.jsonld_broken:
            with pytest.raises(ValueError):
                json.loads(block)
            continue
        data = json.loads(block)
        assert data["@type"] == "NewsArticle" and data["url"] == article.path
        assert data.get("headline") == article.headline
        assert data["datePublished"] == article.published
        assert data["keywords"] == list(article.coins or ())
        assert f'<p class="sentiment">Sentiment: {article.sentiment}</p>' in html
        assert (f'<link rel="canonical" href="{article.path}">' in html) == article.canonical


def test_hostile_values_are_escaped_in_html_and_json_ld() -> None:
    [script] = [a for a in articles() if a.slug.endswith("edge-script-headline")]
    html = render(script.path).body.decode()
    # No value opens or closes a tag: the only <script> is the JSON-LD one, closed once.
    assert html.count("<script") == 1 and html.count("</script>") == 1
    assert "<img" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;xss&quot;)&lt;/script&gt;" in html
    [block] = JSONLD.findall(html)
    assert json.loads(block)["headline"] == script.headline  # the exact value, once decoded
    listing = render("/coins/news/page/1.html").body.decode()
    assert "<script" not in listing and "&lt;/script&gt;" in listing
    [korean] = [a for a in articles() if a.slug.endswith("edge-korean")]
    assert (korean.headline or "") in render(korean.path).body.decode()  # UTF-8, not entities

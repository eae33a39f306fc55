"""The spiders on the demo crypto market, offline: pages saved from the demo site
(tests/fixtures/pages) with every extracted field checked, then every article and a whole hour of
quotes rendered in-process, each item as the demo site says and validated as the manifest says.
(The shop and sensor pages, normalisation and the writer: test_spiders.py.)"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import scrapy
from scrapy.http import HtmlResponse, TextResponse

from crawlstore.crawl.spiders import CatalogueSpider, JsonApiSpider
from crawlstore.items import item_type
from crawlstore.sources import get_source, resolve_start_url, with_start_url
from demo.site import (
    DEMO_SINCE,
    DEMO_UNTIL,
    articles,
    expected_outcomes,
    failing_fields,
    label_of,
    quotes,
    render,
)

QuoteItem = item_type("coin_quote")
ArticleItem = item_type("news_article")
DEMO_NEWS = get_source("demo_coin_news")
DEMO_TICKER = get_source("demo_coin_ticker")

pytestmark = pytest.mark.unit

PAGES = Path(__file__).parent.parent / "fixtures" / "pages"
SITE = "http://127.0.0.1:8000"
NEWS = with_start_url(DEMO_NEWS, f"{SITE}/coins/news/page/1.html")
WINDOW = "since=2025-06-14T07:00:00Z&until=2025-06-14T07:15:00Z"
TICKER = with_start_url(DEMO_TICKER, f"{SITE}/api/coins/ticker?{WINDOW}")
CRAWLED_AT = "2026-01-01T00:00:00Z"


def html(body: bytes, url: str, page_number: int = 1) -> HtmlResponse:
    request = scrapy.Request(url, meta={"page_number": page_number})
    return HtmlResponse(url=url, body=body, encoding="utf-8", request=request)


def article_item(slug: str, body: bytes | None = None) -> dict[str, Any]:
    """The item the catalogue spider makes of an article page: saved, or `body` as given."""
    url = f"{SITE}/coins/news/{slug}.html"
    page = body if body is not None else (PAGES / f"news_{slug}.html").read_bytes()
    [item] = CatalogueSpider(source=NEWS).parse_item(html(page, url))
    assert list(item) == list(ArticleItem.model_fields)  # every field, in the model's order
    assert datetime.fromisoformat(item.pop("crawled_at")).tzinfo is not None
    return item


def ticker_items(query: str = WINDOW, body: bytes | None = None) -> list[dict[str, Any]]:
    url = f"{SITE}/api/coins/ticker?{query}"
    request = scrapy.Request(url, meta={"page_number": 1})
    body = body if body is not None else render(url.removeprefix(SITE)).body
    response = TextResponse(url=url, body=body, encoding="utf-8", request=request)
    items = list(JsonApiSpider(source=with_start_url(DEMO_TICKER, url)).parse(response))
    for item in items:
        assert list(item) == list(QuoteItem.model_fields)
        assert datetime.fromisoformat(item.pop("crawled_at")).tzinfo is not None
    return items


def validates(kind: str, item: dict[str, Any]) -> frozenset[str]:
    return failing_fields(kind, {**item, "crawled_at": CRAWLED_AT})


# ------------------------------------------------------------------ news (catalogue spider)


def test_news_listing_follows_every_article_then_the_next_page() -> None:
    page = html((PAGES / "news_page_1.html").read_bytes(), NEWS.start_url)
    requests = list(CatalogueSpider(source=NEWS).parse(page))
    details, listings = requests[:-1], requests[-1:]
    assert len(details) == 12
    assert details[0].url == f"{SITE}/coins/news/n1001-ether-lags-the-market-as-traders-eye-the-fed.html"
    assert details[1].url == f"{SITE}/coins/news/n1002-edge-script-headline.html"
    assert {r.callback.__name__ for r in details} == {"parse_item"}  # type: ignore[union-attr]
    assert listings[0].url == f"{SITE}/coins/news/page/2.html"
    assert listings[0].meta["page_number"] == 2


def test_last_news_listing_page_has_no_next_page() -> None:
    url = f"{SITE}/coins/news/page/3.html"
    requests = list(
        CatalogueSpider(source=NEWS).parse(html((PAGES / "news_page_3.html").read_bytes(), url, 3))
    )
    assert len(requests) == 12
    assert all(r.url.startswith(f"{SITE}/coins/news/n10") for r in requests)


def test_ordinary_article_page() -> None:
    slug = "n1001-ether-lags-the-market-as-traders-eye-the-fed"
    assert article_item(slug) == {
        "source": "demo_coin_news",
        "article_id": "n1001",  # the canonical link, through the regex
        "headline": "Ether lags the market as traders eye the Fed",  # JSON-LD
        "published_at": "2025-06-14T06:30:00+00:00",
        "modified_at": None,
        "author": "Tom Becker",  # JSON-LD author.name
        "section": "Markets",  # CSS
        "coins": ["ETH", "SOL"],  # JSON-LD keywords: a list
        "sentiment": -0.36,  # "Sentiment: -0.36", through the regex
        "body": "Ether (ETH) lags the market on 14 June, as traders eye the Fed.\n"
        "On the KRW market ETH changed hands near ₩3,717,373 at the time of writing.\n"
        "Solana moved in sympathy.\n"
        "Retail activity on Korean exchanges remained the main driver.",
        "url": f"{SITE}/coins/news/{slug}.html",  # the page's URL
    }


def test_hostile_but_valid_articles_are_extracted_verbatim() -> None:
    script = article_item("n1002-edge-script-headline")
    assert script["headline"] == '</script><script>alert("xss")</script> Bitcoin "to the moon" & beyond'
    assert script["body"] == "Readers sent us <img src=x onerror=alert(1)> again.\nBitcoin traders shrugged."
    assert (script["article_id"], script["coins"]) == ("n1002", ["BTC"])
    korean = article_item("n1006-edge-korean")
    assert korean["headline"] == "비트코인 1억 4500만 원 돌파… 김치 프리미엄 확대 🚀"
    assert korean["author"] == "김민준"
    assert korean["published_at"] == "2025-06-13T02:25:00+00:00"  # sent as 11:25:00+09:00
    for item in (script, korean):
        assert validates("news_article", item) == frozenset()


def test_broken_articles_are_kept_raw_for_validation_to_reject() -> None:
    no_headline = article_item("n1004-edge-no-headline")
    assert no_headline["headline"] is None and no_headline["article_id"] == "n1004"
    assert validates("news_article", no_headline) == {"headline"}
    bad_date = article_item("n1008-edge-bad-date")
    assert bad_date["published_at"] == "yesterday, 3pm"
    assert validates("news_article", bad_date) == {"published_at"}
    # A JSON-LD block that is not JSON is skipped: every field from it is missing, the rest found.
    broken = article_item("n1010-edge-broken-jsonld")
    assert [k for k, v in broken.items() if v is None] == [
        "headline", "published_at", "modified_at", "author", "coins",
    ]  # fmt: skip
    assert (broken["article_id"], broken["section"], broken["sentiment"]) == ("n1010", "Markets", 0.33)
    assert validates("news_article", broken) == {"headline", "published_at"}


def test_every_article_is_extracted_as_the_site_says_and_validated_as_the_manifest_says() -> None:
    expected = expected_outcomes()["news_article"]
    valid, invalid = set(), {}
    for article in articles():
        item = article_item(article.slug, render(article.path).body)
        assert item == article.expected_item(SITE, "demo_coin_news"), article.slug
        if fields := validates("news_article", item):
            invalid[label_of("news_article", item)] = fields
        else:
            valid.add(ArticleItem.model_validate({**item, "crawled_at": CRAWLED_AT}).key)
    assert valid == expected.valid
    assert invalid == dict(expected.invalid)


# ------------------------------------------------------------------ ticker (JSON API spider)


def quote(market: str | None, minute: int, **fields: Any) -> dict[str, Any]:
    return {
        "source": "demo_coin_ticker",
        "quote_id": f"{market}:20250614T07{minute:02d}00" if market else None,
        "market": market,
        **fields,
        "quoted_at": f"2025-06-14T07:{minute:02d}:00+00:00",
    }


def test_ticker_response_gives_one_item_per_quote() -> None:
    items = ticker_items(body=(PAGES / "api_coins_ticker_0700_0715.json").read_bytes())
    assert len(items) == 75  # 5 markets x 15 minutes
    assert items[0] == quote(
        "KRW-BTC",
        0,
        trade_price="151110000.0",  # decimals as exact text
        prev_closing_price="150555000.0",
        high_price="151899000.0",
        low_price="149908000.0",
        change="RISE",
        signed_change_rate=0.00368636,
        acc_trade_volume_24h=2085.51234876,
    )
    assert items[4]["trade_price"] == "886.5"  # KRW-ADA, on a 0.1 tick
    assert items == ticker_items()  # the fixture is what the site serves


def test_ticker_records_broken_and_hostile() -> None:
    by_minute = {(item["quoted_at"], item["market"]): item for item in ticker_items()}

    def at(minute: int, market: str | None, quoted_at: str | None = None) -> dict[str, Any]:
        return by_minute[(quoted_at or f"2025-06-14T07:{minute:02d}:00+00:00", market)]

    # Broken: kept as the API sent them.
    assert at(1, "KRW-BTC")["trade_price"].startswith("-")
    assert at(2, None)["quote_id"] is None
    assert at(3, "KRW-SOL")["signed_change_rate"] == -1.5
    assert at(4, "XRP_KRW")["quote_id"] == "XRP_KRW:20250614T070400"
    naive = at(5, "KRW-ADA", "2025-06-14T07:05:00")
    assert naive["quote_id"] == "KRW-ADA:20250614T070500"  # a key even though the time has no zone
    swapped = at(6, "KRW-BTC")
    assert float(swapped["low_price"]) > float(swapped["high_price"])
    # Hostile but valid, normalised.
    assert isinstance(at(8, "KRW-SOL")["trade_price"], str)  # sent as text
    assert at(9, "KRW-XRP")["quote_id"] == "KRW-XRP:20250614T070900"  # sent as 16:09:00+09:00
    assert "stream_type" not in at(10, "KRW-ADA")
    even = at(11, "KRW-BTC")
    assert (even["change"], even["signed_change_rate"]) == ("EVEN", 0.0)
    assert even["trade_price"] == even["prev_closing_price"]


def test_an_hour_of_quotes_is_extracted_as_the_site_says_and_validated_as_the_manifest_says() -> None:
    query = f"since={DEMO_SINCE.isoformat()}&until={DEMO_UNTIL.isoformat()}".replace("+", "%2B")
    items = ticker_items(query)
    assert items == [{"source": "demo_coin_ticker", **q.expected} for q in quotes(DEMO_SINCE, DEMO_UNTIL)]
    expected = expected_outcomes(DEMO_SINCE, DEMO_UNTIL)["coin_quote"]
    valid, invalid = set(), {}
    for item in items:
        if fields := validates("coin_quote", item):
            invalid[label_of("coin_quote", item)] = fields
        else:
            valid.add(QuoteItem.model_validate({**item, "crawled_at": CRAWLED_AT}).key)
    assert (len(valid), len(invalid)) == (294, 6)
    assert valid == expected.valid
    assert invalid == dict(expected.invalid)


# ------------------------------------------------------------------ sources


def test_coin_sources_are_declared_and_resolve_their_start_urls() -> None:
    assert (DEMO_NEWS.kind, DEMO_NEWS.topic, DEMO_NEWS.spider, DEMO_NEWS.schedule) == (
        "news_article",
        "coin.raw.news",
        "catalogue",
        "@daily",
    )
    assert (DEMO_TICKER.kind, DEMO_TICKER.topic, DEMO_TICKER.spider, DEMO_TICKER.schedule) == (
        "coin_quote",
        "coin.raw.ticker",
        "json_api",
        "@hourly",
    )
    env = {"DEMO_SITE_URL": "http://demo:8000/"}
    assert resolve_start_url(DEMO_NEWS, environ=env) == "http://demo:8000/coins/news/page/1.html"
    params = {
        "data_interval_start": "2025-06-14T07:00:00+00:00",
        "data_interval_end": "2025-06-14T08:00:00+00:00",
    }
    assert resolve_start_url(DEMO_TICKER, params, environ=env) == (
        "http://demo:8000/api/coins/ticker?since=2025-06-14T07%3A00%3A00%2B00%3A00"
        "&until=2025-06-14T08%3A00%3A00%2B00%3A00"
    )

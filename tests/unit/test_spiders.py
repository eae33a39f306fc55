"""Spiders, normalisation, sources and the JSON Lines writer, offline on pages saved from the demo
site (tests/fixtures/pages): every extracted field checked, broken and hostile ones included."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import scrapy
from scrapy.http import HtmlResponse, TextResponse

from crawlstore.config import config_dir
from crawlstore.crawl.normalise import money, normalise, timestamp
from crawlstore.crawl.pipelines import JsonLinesWriter
from crawlstore.crawl.spiders import CatalogueSpider, JsonApiSpider
from crawlstore.items import item_type
from crawlstore.sources import SOURCES, Source, get_source, resolve_start_url, with_start_url

ProductItem = item_type("product")
ReadingItem = item_type("reading")
DEMO_SHOP = get_source("demo_shop")
DEMO_SENSORS = get_source("demo_sensors")

pytestmark = pytest.mark.unit

PAGES = Path(__file__).parent.parent / "fixtures" / "pages"
SITE = "http://127.0.0.1:8000"
SHOP = with_start_url(DEMO_SHOP, f"{SITE}/catalogue/page/1.html")
SENSORS = with_start_url(
    DEMO_SENSORS, f"{SITE}/api/readings?since=2025-06-14T07:00:00Z&until=2025-06-14T07:15:00Z"
)


def html(name: str, url: str, page_number: int = 1) -> HtmlResponse:
    request = scrapy.Request(url, meta={"page_number": page_number})
    return HtmlResponse(url=url, body=(PAGES / name).read_bytes(), encoding="utf-8", request=request)


def detail(slug: str) -> dict[str, Any]:
    """The item the catalogue spider makes of a saved detail page."""
    url = f"{SITE}/catalogue/product/{slug}.html"
    items = list(CatalogueSpider(source=SHOP).parse_item(html(f"product_{slug}.html", url)))
    assert len(items) == 1
    item = items[0]
    assert list(item) == list(ProductItem.model_fields)  # every field, in the model's order
    crawled_at = datetime.fromisoformat(item.pop("crawled_at"))
    assert crawled_at.tzinfo is not None
    return item


def product(slug: str, **fields: Any) -> dict[str, Any]:
    """The expected item: the page's URL and source, plus `fields`."""
    base: dict[str, Any] = {
        "source": "demo_shop",
        "product_id": slug,
        "name": None,
        "brand": None,
        "category": None,
        "price": None,
        "sale_price": None,
        "currency": None,
        "url": f"{SITE}/catalogue/product/{slug}.html",
        "image_url": None,
        "rating": None,
        "review_count": None,
    }
    return {**base, **fields}


# ------------------------------------------------------------------ catalogue spider


def test_listing_page_follows_every_product_then_the_next_page() -> None:
    requests = list(CatalogueSpider(source=SHOP).parse(html("listing_page_1.html", SHOP.start_url)))
    details, listings = requests[:-1], requests[-1:]
    assert len(details) == 25  # 24 products and one under a robots.txt Disallow
    assert [r.url for r in details[:3]] == [
        f"{SITE}/catalogue/product/P00001.html",
        f"{SITE}/catalogue/product/EDGE-SQL-NAME.html",
        f"{SITE}/catalogue/product/P00002.html",
    ]
    assert details[-1].url == f"{SITE}/catalogue/private/EDGE-ROBOTS-PRIVATE.html"
    assert {r.callback.__name__ for r in details} == {"parse_item"}  # type: ignore[union-attr]
    assert listings[0].url == f"{SITE}/catalogue/page/2.html"
    assert listings[0].meta["page_number"] == 2


def test_last_listing_page_has_no_next_page() -> None:
    url = f"{SITE}/catalogue/page/50.html"
    requests = list(CatalogueSpider(source=SHOP).parse(html("listing_page_50.html", url, page_number=50)))
    assert len(requests) == 24
    assert all("/catalogue/product/" in r.url for r in requests)


def test_max_pages_stops_at_the_last_allowed_listing_page() -> None:
    spider = CatalogueSpider(source=SHOP, max_pages=1)
    requests = list(spider.parse(html("listing_page_1.html", SHOP.start_url)))
    assert all("/catalogue/page/" not in r.url for r in requests)
    assert len(requests) == 25


def test_ordinary_product_page() -> None:
    assert detail("P00001") == product(
        "P00001",
        name="Premium Copper Notebook Z48",  # the whitespace around it on the page is stripped
        brand="Cobalt & Co",
        category="Garden",
        price="224.70",  # "€224.70"
        sale_price="121.06",
        currency="EUR",
        image_url=f"{SITE}/static/img/P00001.svg",
        rating=4.7,
        review_count=3161,  # "3,161"
    )


def test_hostile_but_valid_values_are_extracted_verbatim() -> None:
    assert detail("EDGE-SQL-NAME") == product(
        "EDGE-SQL-NAME",
        name="Robert'); DROP TABLE products;--",
        brand="Bobby Tables",
        category="Books",
        price="12.50",
        currency="EUR",
        image_url=f"{SITE}/static/img/EDGE-SQL-NAME.svg",
        rating=4.0,
        review_count=17,
    )
    assert detail("EDGE-SCRIPT-NAME") == product(
        "EDGE-SCRIPT-NAME",
        name='<script>alert("xss")</script> Gadget',
        brand="<b>Bold</b> & Co",
        category="Gadgets",
        price="9.99",
        currency="GBP",
        image_url=f"{SITE}/static/img/EDGE-SCRIPT-NAME.svg",
        rating=3.5,
        review_count=2,
    )
    assert detail("EDGE-KOREAN-NAME") == product(
        "EDGE-KOREAN-NAME",
        name="무선 이어폰 🎧 프로",
        brand="한빛전자",
        category="가전/오디오",
        price="25000.00",
        currency="KRW",
        image_url=f"{SITE}/static/img/EDGE-KOREAN-NAME.svg",
        rating=4.8,
        review_count=1523,
    )


def test_broken_values_are_kept_raw_for_validation_to_reject() -> None:
    # "abc" stays "abc", the rating 9.5 stays 9.5, the missing currency is None: nothing repaired.
    assert detail("EDGE-MANY-FAULTS") == product(
        "EDGE-MANY-FAULTS",
        name="Everything Wrong",
        price="abc",
        rating=9.5,
        review_count=3,
    )
    assert detail("EDGE-SALE-ABOVE-PRICE") == product(
        "EDGE-SALE-ABOVE-PRICE",
        name="Upside-down Sale",
        price="10.00",
        sale_price="12.50",
        currency="EUR",
    )
    traversal = detail("EDGE-TRAVERSAL-ID")
    assert traversal == {
        **product("EDGE-TRAVERSAL-ID", name="Path Finder", category="Tools", price="5.00", currency="EUR"),
        "product_id": "../../etc/passwd",
    }
    missing = detail("EDGE-MISSING-ID")
    assert missing == {
        **product("EDGE-MISSING-ID", name="Nameless Widget", category="Tools", price="3.99", currency="EUR"),
        "product_id": None,
    }


def test_saved_product_pages_validate_as_the_manifest_says() -> None:
    valid = {"P00001", "EDGE-SQL-NAME", "EDGE-SCRIPT-NAME", "EDGE-KOREAN-NAME"}
    for slug in valid:
        ProductItem.model_validate({**detail(slug), "crawled_at": "2026-01-01T00:00:00Z"})
    for slug in ("EDGE-MANY-FAULTS", "EDGE-SALE-ABOVE-PRICE", "EDGE-TRAVERSAL-ID", "EDGE-MISSING-ID"):
        with pytest.raises(ValueError):
            ProductItem.model_validate({**detail(slug), "crawled_at": "2026-01-01T00:00:00Z"})


def test_the_catalogue_spider_takes_xpath_selectors_for_another_site() -> None:
    # Another site's layout is a Source away: no site logic in the spider.
    other = Source(
        name="other_shop",
        kind="product",
        topic="crawl.products",
        spider="catalogue",
        start_url="http://shop.example/list",
        schedule="@daily",
        description="XPath variant",
        selectors={
            "item_links": "xpath://a[@class='product-link']/@href",
            "product_id": "xpath://td[@itemprop='sku']/text()",
            "name": "xpath://h1/text()",
            "price": "xpath://*[contains(@class, 'price-sale')]/text()",
        },
    )
    url = "http://shop.example/p/P00001"
    [item] = CatalogueSpider(source=other).parse_item(html("product_P00001.html", url))
    assert {k: item[k] for k in ("source", "product_id", "name", "price", "url")} == {
        "source": "other_shop",
        "product_id": "P00001",
        "name": "Premium Copper Notebook Z48",
        "price": "121.06",
        "url": url,
    }


# ------------------------------------------------------------------ JSON API spider


def api_items() -> list[dict[str, Any]]:
    body = (PAGES / "api_readings_0700_0715.json").read_bytes()
    request = scrapy.Request(SENSORS.start_url, meta={"page_number": 1})
    response = TextResponse(url=SENSORS.start_url, body=body, encoding="utf-8", request=request)
    items = list(JsonApiSpider(source=SENSORS).parse(response))
    for item in items:
        assert list(item) == [f for f in ReadingItem.model_fields if f not in ReadingItem.spec.derived]
        assert datetime.fromisoformat(item.pop("crawled_at")).tzinfo is not None
    return items


def reading(device: str | None, minute: int, **fields: Any) -> dict[str, Any]:
    rid = f"{device}:20250614T07{minute:02d}00" if device else None
    return {
        "source": "demo_sensors",
        "reading_id": rid,
        "device_id": device,
        "measured_at": f"2025-06-14T07:{minute:02d}:00+00:00",
        **fields,
    }


def test_api_response_gives_one_item_per_record() -> None:
    items = api_items()
    assert len(items) == 75
    assert items[0] == reading(
        "1",
        0,
        sensor1=75.7,
        sensor2=98.22,
        sensor3=86.93,
        motor1=812.58,
        motor2=1371.66,
        motor3=1420.77,
        is_fail=False,
    )
    assert Counter(item["device_id"] for item in items)["1"] == 15


def test_api_records_broken_and_hostile() -> None:
    by_minute = {(item["measured_at"], item["device_id"]): item for item in api_items()}

    def at(minute: int, device: str | None, measured_at: str | None = None) -> dict[str, Any]:
        return by_minute[(measured_at or f"2025-06-14T07:{minute:02d}:00+00:00", device)]

    # Broken: kept as the API sent them.
    assert at(1, "1")["is_fail"] is None
    assert at(2, "2")["sensor1"] == "n/a"
    assert at(4, "4")["motor2"] == 1e13
    naive = at(5, "5", "2025-06-14T07:05:00")
    assert naive["reading_id"] == "5:20250614T070500"  # a key even though the time has no zone
    day_first = at(6, "1", "14/06/2025 07:06:00")
    assert day_first["reading_id"] is None
    traversal = at(7, "../../etc/passwd")
    assert traversal["reading_id"] == "../../etc/passwd:20250614T070700"
    assert at(8, "3")["is_fail"] == "maybe"
    assert at(9, None)["reading_id"] is None
    # Hostile but valid, normalised.
    assert at(3, "3")["sensor2"] is None
    assert (at(10, "5")["sensor1"], at(10, "5")["is_fail"]) == (-12.5, True)
    assert at(11, "1")["reading_id"] == "1:20250614T071100"  # sent as 16:11:00+09:00
    assert at(12, "2")["device_id"] == "2"  # sent as the string "2"
    assert at(13, "3")["sensor3"] == 91.5  # sent as the string "91.5"
    assert "firmware" not in at(14, "4")


def test_json_api_spider_follows_records_path_and_next_page_of_another_api() -> None:
    api = Source(
        name="other_api",
        kind="reading",
        topic="crawl.readings",
        spider="json_api",
        start_url="http://api.example/v1/readings",
        schedule="@hourly",
        description="paged API",
        selectors={
            "records": "data.items",
            "next_page": "links.next",
            "device_id": "device.id",
            "measured_at": "ts",
            "is_fail": "status.failed",
        },
    )
    body = json.dumps(
        {
            "data": {
                "items": [{"device": {"id": 7}, "ts": 1749884400, "status": {"failed": "false"}}, "junk"]
            },
            "links": {"next": "/v1/readings?page=2"},
        }
    )
    request = scrapy.Request(api.start_url, meta={"page_number": 1})
    response = TextResponse(url=api.start_url, body=body.encode(), encoding="utf-8", request=request)
    item, follow = list(JsonApiSpider(source=api).parse(response))
    assert {k: v for k, v in item.items() if k != "crawled_at"} == {
        "source": "other_api",
        "reading_id": "7:20250614T070000",
        "device_id": "7",
        "is_fail": False,
        "measured_at": "2025-06-14T07:00:00+00:00",
    }
    assert follow.url == "http://api.example/v1/readings?page=2"
    assert follow.meta["page_number"] == 2


def test_a_start_page_that_is_not_json_is_a_start_failure() -> None:
    spider = JsonApiSpider(source=SENSORS)
    response = HtmlResponse(
        url=SENSORS.start_url,
        body=b"<html>maintenance</html>",
        encoding="utf-8",
        request=scrapy.Request(SENSORS.start_url, meta={"page_number": 1}),
    )
    assert list(spider.parse(response)) == []
    assert spider.start_failure is not None
    assert spider.start_failure.startswith("bad_response: ")


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("shown", "value"),
    [
        ("€19.99", "19.99"),
        ("€1,299.00", "1299.00"),
        ("19.99 EUR", "19.99"),
        ("EUR 19.99", "19.99"),
        ("-€5.00", "-5.00"),
        ("€-5.00", "-5.00"),
        ("₩25,000", "25000"),
        ("  £0.50 ", "0.50"),
        ("€19.999", "19.999"),  # too precise, but read as written: validation decides
        ("abc", "abc"),
        ("NaN", "NaN"),
        ("1,29.00", "1,29.00"),
        ("12 for €5", "12 for €5"),
        ("-€-5", "-€-5"),
        ("", None),
        (None, None),
        (19.99, "19.99"),
        (20, "20"),
    ],
)
def test_money_is_read_exactly_or_kept_as_it_was(shown: Any, value: Any) -> None:
    assert money(shown) == value


@pytest.mark.parametrize(
    ("sent", "value"),
    [
        ("2025-06-14T07:40:27Z", "2025-06-14T07:40:27+00:00"),
        ("2025-06-14T16:40:27+09:00", "2025-06-14T07:40:27+00:00"),
        ("2025-06-14T07:40:27", "2025-06-14T07:40:27"),  # no zone: UTC would be a guess
        ("14/06/2025 07:40:27", "14/06/2025 07:40:27"),
        (1749886827, "2025-06-14T07:40:27+00:00"),
        (None, None),
    ],
)
def test_timestamps_become_utc_iso_or_stay_as_they_were(sent: Any, value: Any) -> None:
    assert timestamp(sent) == value


def test_normalise_fills_source_crawl_time_and_page_url() -> None:
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    item = normalise(
        "product",
        {"product_id": " P1 ", "image_url": "/img/p1.png"},
        page_url="http://s.example/p/1",
        source="s",
        crawled_at=moment,
    )
    assert item == {
        "source": "s",
        "crawled_at": "2026-01-01T12:00:00+00:00",
        "product_id": "P1",
        "url": "http://s.example/p/1",
        "image_url": "http://s.example/img/p1.png",
    }


# ------------------------------------------------------------------ sources


def test_demo_sources_are_declared() -> None:
    declared = sorted(p.stem for p in config_dir().glob("sources/*.yaml"))
    assert [s.name for s in SOURCES] == declared  # file-name order
    assert {"demo_coin_news", "demo_coin_ticker", "demo_sensors", "demo_shop"} <= set(declared)
    assert (DEMO_SHOP.kind, DEMO_SHOP.topic, DEMO_SHOP.spider) == ("product", "crawl.products", "catalogue")
    assert (DEMO_SENSORS.kind, DEMO_SENSORS.topic, DEMO_SENSORS.spider) == (
        "reading",
        "crawl.readings",
        "json_api",
    )
    assert get_source("demo_shop") is DEMO_SHOP
    assert DEMO_SENSORS.params == {"data_interval_start", "data_interval_end"}
    with pytest.raises(KeyError, match="no source named"):
        get_source("nope")


def test_start_urls_are_resolved_at_run_time() -> None:
    assert "{DEMO_SITE_URL}" in DEMO_SHOP.start_url  # nothing resolved at import
    env = {"DEMO_SITE_URL": "http://demo:8000/"}
    assert resolve_start_url(DEMO_SHOP, environ=env) == "http://demo:8000/catalogue/page/1.html"
    params = {
        "data_interval_start": "2025-06-14T07:00:00+00:00",
        "data_interval_end": "2025-06-14T08:00:00+00:00",
    }
    assert resolve_start_url(DEMO_SENSORS, params, environ=env) == (
        "http://demo:8000/api/readings?since=2025-06-14T07%3A00%3A00%2B00%3A00"
        "&until=2025-06-14T08%3A00%3A00%2B00%3A00"
    )
    with pytest.raises(ValueError, match="environment variable DEMO_SITE_URL"):
        resolve_start_url(DEMO_SHOP, environ={})
    with pytest.raises(ValueError, match="run parameter 'data_interval_end'"):
        resolve_start_url(DEMO_SENSORS, {"data_interval_start": "x"}, environ=env)


def test_a_source_survives_its_json_form_and_stays_read_only() -> None:
    assert Source.from_json(DEMO_SHOP.to_json()) == DEMO_SHOP
    assert hash(DEMO_SHOP) == hash(Source.from_json(DEMO_SHOP.to_json()))
    with pytest.raises(TypeError):
        DEMO_SHOP.selectors["name"] = "h2::text"  # type: ignore[index]


# ------------------------------------------------------------------ JSON Lines writer


class FakeStats:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def set_value(self, key: str, value: int) -> None:
        self.values[key] = value

    def inc_value(self, key: str) -> None:
        self.values[key] = self.values.get(key, 0) + 1

    def get_value(self, key: str, default: int = 0) -> int:
        return self.values.get(key, default)


def test_writer_puts_one_utf8_json_object_per_line(tmp_path: Path) -> None:
    stats = FakeStats()
    path = tmp_path / "out" / "items.jsonl"
    writer = JsonLinesWriter(path, stats)  # type: ignore[arg-type]
    writer.open_spider()
    items = [{"name": "무선 이어폰 🎧", "note": "line\nbreak"}, {"name": "Robert'); DROP TABLE products;--"}]
    for item in items:
        assert writer.process_item(item) is item
    writer.close_spider()
    raw = path.read_bytes()
    assert "무선 이어폰 🎧".encode() in raw  # UTF-8, not \u escapes
    assert [json.loads(line) for line in raw.decode().splitlines()] == items
    assert stats.values["crawlstore/items_written"] == 2

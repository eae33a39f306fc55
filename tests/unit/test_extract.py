"""Field extraction rules on a saved page: JSON-LD, JSON inside a <script>, a regular expression and
a default; the same rules for JSON API records; and the configuration's checks of a rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scrapy.http import HtmlResponse

from crawlstore.config.models import Extract
from crawlstore.crawl.extract import from_page, from_record
from crawlstore.crawl.spiders import CatalogueSpider
from crawlstore.items import item_type
from crawlstore.sources import Source

pytestmark = pytest.mark.unit
# A page as another shop serves it (the demo site serves tests/fixtures/pages).
PAGE = Path(__file__).parent.parent / "fixtures" / "saved" / "product_jsonld.html"
URL = "https://shop.example/p/LD-4242"


@pytest.fixture
def page() -> HtmlResponse:
    return HtmlResponse(url=URL, body=PAGE.read_bytes(), encoding="utf-8")


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ({"jsonld": "sku"}, "LD-4242"),  # found in the @graph, past the broken block
        ({"jsonld": "offers.price"}, "89.90"),
        ({"jsonld": "brand.name"}, "Lumen & Co"),
        ({"jsonld": "aggregateRating.reviewCount"}, 1523),
        ({"jsonld": "offers.nope"}, None),
        ({"script": "script#__NEXT_DATA__::text", "path": "props.pageProps.product.category"}, "Lighting"),
        ({"css": "p.promo b::text", "regex": r"([\d.,]+)"}, "79.90"),
        ({"css": "p.promo::text", "regex": r"until (\w+)"}, "Sunday"),
        ({"css": "p.promo::text", "regex": r"no such words"}, None),
        ({"css": ".missing::text", "default": "EUR"}, "EUR"),
        ({"xpath": "//h1/text()"}, "Aurora desk lamp"),
        ("img.hero::attr(src)", "/img/LD-4242.jpg"),
    ],
)
def test_rules_find_their_value_on_a_saved_page(page: HtmlResponse, rule: Any, value: Any) -> None:
    assert from_page(page, rule) == value


def test_json_api_records_take_a_path_with_regex_and_default() -> None:
    record = {"DeviceId": "FMS-3", "reading": {"temp": "71.5 °C"}, "tags": ["a"]}
    assert from_record(record, "DeviceId") == "FMS-3"
    assert from_record(record, {"path": "reading.temp", "regex": r"([-\d.]+)"}) == "71.5"
    assert from_record(record, {"path": "reading.humidity", "default": 0}) == 0
    assert from_record(record, "tags.0") == "a"


def test_a_catalogue_source_extracts_a_whole_product_from_json_ld(page: HtmlResponse) -> None:
    source = Source(
        name="lamp_shop",
        kind="product",
        topic="crawl.products",
        spider="catalogue",
        start_url="https://shop.example/list",
        schedule="@daily",
        description="",
        selectors={
            "item_links": "a::attr(href)",
            "product_id": {"jsonld": "sku"},
            "name": {"jsonld": "name"},
            "brand": {"jsonld": "brand.name"},
            "category": {"script": "script#__NEXT_DATA__::text", "path": "props.pageProps.product.category"},
            "price": {"jsonld": "offers.price"},
            "sale_price": {"css": "p.promo b::text", "regex": r"([\d.,]+)"},
            "currency": {"jsonld": "offers.priceCurrency", "default": "EUR"},
            "image_url": "img.hero::attr(src)",
            "rating": {"jsonld": "aggregateRating.ratingValue"},
            "review_count": {"jsonld": "aggregateRating.reviewCount"},
        },
    )
    (raw,) = CatalogueSpider(source).parse_item(page)
    item = item_type("product").model_validate(raw)
    assert (item.key, item.name, item.brand, item.category) == (
        "LD-4242",
        "Aurora desk lamp",
        "Lumen & Co",
        "Lighting",
    )
    assert (str(item.price), str(item.sale_price), item.currency) == ("89.90", "79.90", "EUR")
    assert (item.rating, item.review_count) == (4.6, 1523)
    assert (item.url, item.image_url) == (URL, "https://shop.example/img/LD-4242.jpg")


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (
            {"css": "h1::text", "jsonld": "name"},
            "give exactly one of css, xpath, jsonld, script, path (given: css, jsonld)",
        ),
        ({"regex": "(x)"}, "given: none"),
        ({"script": "script::text"}, "`script` needs `path`"),
        ({"css": "h1::text", "regex": "(["}, "is not a regular expression"),
        ({"css": "h1::text", "colour": "red"}, "unknown key(s) colour"),
    ],
)
def test_a_wrong_rule_is_refused(rule: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Extract.model_validate(rule)

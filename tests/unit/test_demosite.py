"""The demo site: deterministic, big enough, and its manifest agrees with the item schema (the
coin ticker and news site: test_demosite_coins.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from protego import Protego

from crawlstore.items import item_type
from demo.site import (
    DEMO_SINCE,
    DEMO_UNTIL,
    catalogue,
    expected_outcomes,
    failing_fields,
    label_of,
    products,
    readings,
    render,
)
from demo.site.pages import ROBOTS_TXT

ProductItem = item_type("product")
ReadingItem = item_type("reading")

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "pages"
BASE = "http://127.0.0.1:8000"
CRAWLED_AT = "2026-01-01T00:00:00+00:00"

DIGEST_SCRIPT = """
import hashlib
from demo.site import catalogue, coin_news, render
window = "since=2025-06-14T07:00:00Z&until=2025-06-14T08:00:00Z"
paths = ["/", "/robots.txt", f"/api/readings?{window}", f"/api/coins/ticker?{window}"]
paths += [f"/catalogue/page/{n}.html" for n in range(1, catalogue.page_count() + 1)]
paths += [p.path for p in catalogue.products()]
paths += [f"/coins/news/page/{n}.html" for n in range(1, coin_news.news_page_count() + 1)]
paths += [a.path for a in coin_news.articles()]
digest = hashlib.sha256()
for path in paths:
    page = render(path)
    digest.update(f"{path} {page.status} {page.content_type} ".encode() + page.body)
print(digest.hexdigest())
"""


def site_digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_every_page_is_the_same_bytes_on_every_run() -> None:
    # Separate interpreters with different hash seeds: no set/dict ordering may leak into pages.
    assert site_digest("1") == site_digest("2")


def test_catalogue_has_over_a_thousand_products_over_many_pages() -> None:
    listed = products()
    assert len(listed) >= 1000
    assert catalogue.page_count() >= 40
    assert len({p.slug for p in listed}) == len(listed)
    on_pages = [p for n in range(1, catalogue.page_count() + 1) for p in catalogue.page(n)]
    assert on_pages == list(listed)


def test_every_listing_page_links_its_products_and_the_next_page() -> None:
    last = catalogue.page_count()
    for number in (1, 2, last):
        html = render(f"/catalogue/page/{number}.html").body.decode()
        links = re.findall(r'class="product-link" href="([^"]+)"', html)
        expected = [f"../product/{p.slug}.html" for p in catalogue.page(number)]
        if number == 1:
            expected.append(f"../private/{catalogue.ROBOTS_BLOCKED.slug}.html")
        assert links == expected
        assert (f'<li class="next"><a href="{number + 1}.html">' in html) == (number < last)
    assert render(f"/catalogue/page/{last + 1}.html").status == 404


def test_product_manifest_agrees_with_the_item_schema() -> None:
    outcomes = expected_outcomes()["product"]
    valid, invalid = set(), {}
    for product in products():
        item = {**product.expected_item(BASE, "demo_shop"), "crawled_at": CRAWLED_AT}
        fields = failing_fields("product", item)
        assert fields == product.invalid, product.label
        if fields:
            invalid[label_of("product", item)] = fields
        else:
            valid.add(ProductItem.model_validate(item).key)
    assert valid == outcomes.valid
    assert invalid == dict(outcomes.invalid)
    assert outcomes.total == len(products())


def test_product_manifest_covers_the_broken_kinds_and_hostile_values() -> None:
    outcomes = expected_outcomes()["product"]
    assert dict(outcomes.invalid) == {
        "EDGE-PRICE-TEXT": {"price"},
        "EDGE-TRAVERSAL-ID": {"product_id"},
        "EDGE-MISSING-ID": {"product_id"},
        "EDGE-MISSING-NAME": {"name"},
        "EDGE-MISSING-PRICE": {"price"},
        "EDGE-REVIEWS-TEXT": {"review_count"},
        "EDGE-RATING-7": {"rating"},
        "EDGE-NEGATIVE-PRICE": {"price"},
        "EDGE-SALE-ABOVE-PRICE": {"price", "sale_price"},
        "EDGE-BAD-CURRENCY": {"currency"},
        "EDGE-LONG-NAME": {"name"},
        "EDGE-PRICE-3-DECIMALS": {"price"},
        "EDGE-PRICE-TOO-HIGH": {"price"},
        "EDGE-NAN-PRICE": {"price"},
        "EDGE-JS-IMAGE": {"image_url"},
        "EDGE-LONG-BRAND": {"brand"},
        "EDGE-MANY-FAULTS": {"price", "rating", "currency"},
    }
    hostile = {
        "EDGE-SQL-NAME",
        "EDGE-SCRIPT-NAME",
        "EDGE-KOREAN-NAME",
        "EDGE-DOTDOT-TEXT",
        "EDGE-QUOTES",
        "EDGE-NAME-500",
        "EDGE-FREE",
        "EDGE-SALE-EQUALS-PRICE",
        "EDGE-BARE",
        "EDGE-RATING-BOUNDS",
    }
    assert hostile <= outcomes.valid
    assert outcomes.not_crawled == {"EDGE-ROBOTS-PRIVATE"}
    by_label = {p.label: p for p in products()}
    assert len(by_label["EDGE-LONG-NAME"].name or "") == 100_000
    assert by_label["EDGE-SQL-NAME"].name == "Robert'); DROP TABLE products;--"


def test_reading_manifest_agrees_with_the_item_schema() -> None:
    outcomes = expected_outcomes()["reading"]
    valid, invalid = set(), {}
    for reading in readings(DEMO_SINCE, DEMO_UNTIL):
        item = {**reading.expected, "source": "demo_sensors", "crawled_at": CRAWLED_AT}
        fields = failing_fields("reading", item)
        assert fields == reading.invalid, reading.label
        if fields:
            invalid[label_of("reading", item)] = fields
        else:
            valid.add(ReadingItem.model_validate(item).key)
    assert valid == outcomes.valid
    assert invalid == dict(outcomes.invalid)
    assert outcomes.total == 300  # 5 devices x 60 minutes


def test_reading_manifest_names_each_broken_record() -> None:
    assert dict(expected_outcomes()["reading"].invalid) == {
        "1:20250614T070100": {"is_fail"},
        "2:20250614T070200": {"sensor1"},
        "4:20250614T070400": {"motor2"},
        "5:20250614T070500": {"measured_at"},
        "1@14/06/2025 07:06:00": {"measured_at", "reading_id"},
        "../../etc/passwd:20250614T070700": {"device_id", "reading_id"},
        "3:20250614T070800": {"is_fail"},
        "None@2025-06-14T07:09:00+00:00": {"device_id", "reading_id"},
    }


@pytest.mark.parametrize("offset_minutes", [0, 23, 59])
def test_any_hour_of_readings_holds_each_edge_case_once(offset_minutes: int) -> None:
    since = DEMO_SINCE + timedelta(hours=30, minutes=offset_minutes)
    outcomes = expected_outcomes(since, since + timedelta(hours=1))["reading"]
    assert outcomes.total == 300
    assert len(outcomes.invalid) == 8


def test_api_returns_the_window_asked_for_and_rejects_bad_windows() -> None:
    page = render("/api/readings?since=2025-06-14T07:00:00Z&until=2025-06-14T07:02:00Z")
    records = json.loads(page.body)
    assert page.status == 200 and page.content_type.startswith("application/json")
    assert [(r["time"], r["DeviceId"]) for r in records[:6]] == [
        ("2025-06-14T07:00:00Z", 1),
        ("2025-06-14T07:00:00Z", 2),
        ("2025-06-14T07:00:00Z", 3),
        ("2025-06-14T07:00:00Z", 4),
        ("2025-06-14T07:00:00Z", 5),
        ("2025-06-14T07:01:00Z", 1),
    ]
    assert len(records) == 10
    # Without a window: the last hour before now, like a live API.
    now = datetime(2025, 6, 14, 9, 30, 12, tzinfo=UTC)
    assert len(json.loads(render("/api/readings", now=now).body)) == 300
    for bad in (
        "since=yesterday",
        "since=2025-06-14T07:00:00",
        "since=2025-06-10T00:00:00Z&until=2025-06-14T00:00:00Z",
        "since=2025-06-14T08:00:00Z&until=2025-06-14T07:00:00Z",
    ):
        page = render(f"/api/readings?{bad}")
        assert page.status == 400, bad
        assert "error" in json.loads(page.body)


def test_robots_txt_opens_the_catalogue_and_closes_admin_and_private_pages() -> None:
    robots = Protego.parse(ROBOTS_TXT)
    agent = "crawlstore/0.1"
    assert robots.can_fetch(f"{BASE}/catalogue/page/1.html", agent)
    assert robots.can_fetch(f"{BASE}/catalogue/product/P00001.html", agent)
    assert robots.can_fetch(f"{BASE}/api/readings", agent)
    assert robots.can_fetch(f"{BASE}/api/coins/ticker", agent)
    assert robots.can_fetch(f"{BASE}/coins/news/page/1.html", agent)
    assert robots.can_fetch(f"{BASE}/coins/news/n1001-x.html", agent)
    assert not robots.can_fetch(f"{BASE}/admin/", agent)
    assert not robots.can_fetch(f"{BASE}{catalogue.ROBOTS_BLOCKED_PATH}", agent)
    # The site itself serves them: only robots.txt keeps crawlers out.
    assert render("/admin/").status == 200
    assert render(catalogue.ROBOTS_BLOCKED_PATH).status == 200


def test_unknown_and_hostile_paths_are_not_found() -> None:
    for path in (
        "/nope",
        "/catalogue/product/../../etc/passwd.html",
        "/catalogue/product/NOPE.html",
        "/catalogue/private/P00001.html",
        "/static/img/NOPE.svg",
        "/coins/news/page/0.html",
        "/coins/news/page/4.html",
        "/coins/news/n9999-nope.html",
        "/coins/news/../../etc/passwd.html",
        "/coins/news/N1001-UPPER.html",
    ):
        assert render(path).status == 404, path


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir()))
def test_saved_fixture_pages_are_what_the_site_serves(fixture: str) -> None:
    """Regenerate with `python -m demo.site render PATH > tests/fixtures/pages/NAME`."""
    if fixture.startswith("listing_page_"):
        path = f"/catalogue/page/{fixture.removeprefix('listing_page_').removesuffix('.html')}.html"
    elif fixture.startswith("product_"):
        path = f"/catalogue/product/{fixture.removeprefix('product_')}"
    elif fixture.startswith("news_page_"):
        path = f"/coins/news/page/{fixture.removeprefix('news_page_')}"
    elif fixture.startswith("news_"):
        path = f"/coins/news/{fixture.removeprefix('news_')}"
    elif fixture == "api_coins_ticker_0700_0715.json":
        path = "/api/coins/ticker?since=2025-06-14T07:00:00Z&until=2025-06-14T07:15:00Z"
    else:
        assert fixture == "api_readings_0700_0715.json"
        path = "/api/readings?since=2025-06-14T07:00:00Z&until=2025-06-14T07:15:00Z"
    body = (FIXTURES / fixture).read_bytes()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(render(path).body).hexdigest()

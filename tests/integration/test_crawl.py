"""Crawls of the demo site over real HTTP on 127.0.0.1, each in a child process via run_crawl.

Needs no service of the stack: the demo site runs in a thread of the test process.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crawlstore.crawl import CrawlFailed, CrawlResult, run_crawl
from crawlstore.items import item_type
from crawlstore.sources import get_source, with_start_url
from demo.site import (
    DEMO_SINCE,
    DEMO_UNTIL,
    RunningSite,
    catalogue,
    expected_outcomes,
    failing_fields,
    label_of,
    readings,
    running,
)

DEMO_SHOP = get_source("demo_shop")
DEMO_SENSORS = get_source("demo_sensors")

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

WINDOW = {"data_interval_start": DEMO_SINCE.isoformat(), "data_interval_end": DEMO_UNTIL.isoformat()}


@pytest.fixture(scope="module")
def site() -> Iterator[RunningSite]:
    with running() as demo:
        yield demo


@pytest.fixture
def demo_env(site: RunningSite, monkeypatch: pytest.MonkeyPatch) -> RunningSite:
    """DEMO_SITE_URL pointing at the running demo site, as the stack's environment does."""
    monkeypatch.setenv("DEMO_SITE_URL", site.url)
    site.hits.clear()
    return site


def read_items(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def without_crawl_time(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "crawled_at"}


def outcomes_of(kind: str, items: list[dict[str, Any]]) -> tuple[set[str], dict[str, frozenset[str]]]:
    """What validation makes of crawled items: valid ids, and invalid labels -> failing fields."""
    valid, invalid = set(), {}
    for item in items:
        if fields := failing_fields(kind, item):
            invalid[label_of(kind, item)] = fields
        else:
            valid.add(item_type(kind).model_validate(item).key)
    return valid, invalid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_partial_files(folder: Path) -> bool:
    return not list(folder.glob(".*.part"))


def test_first_listing_pages_of_the_catalogue(demo_env: RunningSite, tmp_path: Path) -> None:
    output = tmp_path / "items.jsonl"
    result = run_crawl(DEMO_SHOP, output, max_pages=2)

    listed = [*catalogue.page(1), *catalogue.page(2)]
    assert result.item_count == len(listed) == 48
    items = read_items(output)
    assert {label_of("product", i): without_crawl_time(i) for i in items} == {
        p.label: p.expected_item(demo_env.url, "demo_shop") for p in listed
    }
    # robots.txt obeyed: fetched first, the disallowed product page never requested.
    assert demo_env.hits["/robots.txt"] == 1
    assert demo_env.hits[catalogue.ROBOTS_BLOCKED_PATH] == 0
    assert result.robots_forbidden == 1
    assert demo_env.hits["/catalogue/page/3.html"] == 0
    assert no_partial_files(tmp_path)


def test_full_catalogue_crawl_yields_every_product_the_manifest_counts(
    demo_env: RunningSite, tmp_path: Path, record_property: Any
) -> None:
    output = tmp_path / "items.jsonl"
    result = run_crawl(DEMO_SHOP, output)

    expected = expected_outcomes()["product"]
    assert result.item_count == expected.total == len(catalogue.products())
    items = read_items(output)
    assert len(items) == expected.total
    valid, invalid = outcomes_of("product", items)
    assert valid == expected.valid
    assert invalid == dict(expected.invalid)
    assert {label_of("product", i) for i in items}.isdisjoint(expected.not_crawled)
    assert result.pages == catalogue.page_count() + len(catalogue.products()) + 1  # + robots.txt
    assert result.errors == 0 and result.item_pages_failed == 0
    record_property("items_per_s", round(result.items_per_s, 1))
    log.info(
        "full catalogue: %d items in %.2f s (%.0f items/s)",
        result.item_count,
        result.duration_s,
        result.items_per_s,
    )


def test_sensor_readings_of_a_data_interval(demo_env: RunningSite, tmp_path: Path) -> None:
    output = tmp_path / "readings.jsonl"
    result = run_crawl(DEMO_SENSORS, output, params=WINDOW)

    expected = expected_outcomes(DEMO_SINCE, DEMO_UNTIL)["reading"]
    items = read_items(output)
    assert result.item_count == len(items) == expected.total == 300
    assert {label_of("reading", i): without_crawl_time(i) for i in items} == {
        r.label: {**r.expected, "source": "demo_sensors"} for r in readings(DEMO_SINCE, DEMO_UNTIL)
    }
    valid, invalid = outcomes_of("reading", items)
    assert valid == expected.valid
    assert invalid == dict(expected.invalid)


def test_rerunning_a_data_interval_gives_the_same_records(demo_env: RunningSite, tmp_path: Path) -> None:
    first = run_crawl(DEMO_SENSORS, tmp_path / "a.jsonl", params=WINDOW)
    second = run_crawl(DEMO_SENSORS, tmp_path / "b.jsonl", params=WINDOW)
    assert [without_crawl_time(i) for i in read_items(first.output)] == [
        without_crawl_time(i) for i in read_items(second.output)
    ]


def test_site_down_fails_clearly(tmp_path: Path) -> None:
    down = with_start_url(DEMO_SHOP, f"http://127.0.0.1:{free_port()}/catalogue/page/1.html")
    output = tmp_path / "items.jsonl"
    with pytest.raises(CrawlFailed) as failed:
        run_crawl(down, output)
    assert failed.value.reason == "unreachable"
    assert "cannot connect to" in str(failed.value) and "Connection refused" in str(failed.value)
    assert not output.exists() and no_partial_files(tmp_path)


def test_start_page_http_error_fails_clearly(site: RunningSite, tmp_path: Path) -> None:
    missing = with_start_url(DEMO_SHOP, f"{site.url}/catalogue/page/999.html")
    with pytest.raises(CrawlFailed, match="answered HTTP 404") as failed:
        run_crawl(missing, tmp_path / "items.jsonl")
    assert failed.value.reason == "http_error"


@pytest.mark.parametrize(
    ("source", "params"),
    [
        (DEMO_SHOP, None),  # the home page has no product links for the catalogue selectors
        (
            DEMO_SENSORS,
            {"data_interval_start": "2025-06-14T07:00:00Z", "data_interval_end": "2025-06-14T07:00:00Z"},
        ),
    ],
    ids=["html-without-items", "empty-api-window"],
)
def test_a_site_that_yields_no_items_fails(
    site: RunningSite,
    tmp_path: Path,
    source: Any,
    params: dict[str, str] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEMO_SITE_URL", site.url)
    if source is DEMO_SHOP:
        source = with_start_url(DEMO_SHOP, f"{site.url}/")
    output = tmp_path / "items.jsonl"
    output.write_text("yesterday's items\n")
    with pytest.raises(CrawlFailed, match="yielded no items") as failed:
        run_crawl(source, output, params=params)
    assert failed.value.reason == "no_items"
    assert output.read_text() == "yesterday's items\n"  # a failed crawl replaces nothing
    assert no_partial_files(tmp_path)


def test_a_crawl_cut_short_leaves_no_half_file(demo_env: RunningSite, tmp_path: Path) -> None:
    output = tmp_path / "items.jsonl"
    slow = {"DOWNLOAD_DELAY": 0.2, "CONCURRENT_REQUESTS_PER_DOMAIN": 1}
    with pytest.raises(CrawlFailed, match="did not finish within 2 s") as failed:
        run_crawl(DEMO_SHOP, output, timeout_s=2, settings=slow)
    assert failed.value.reason == "timeout"
    assert not output.exists() and no_partial_files(tmp_path)


def test_missing_run_parameters_fail_before_crawling(tmp_path: Path) -> None:
    with pytest.raises(CrawlFailed, match="run parameter 'data_interval_start'") as failed:
        run_crawl(DEMO_SENSORS, tmp_path / "readings.jsonl")
    assert failed.value.reason == "config"


def test_the_command_line_prints_a_summary(demo_env: RunningSite, tmp_path: Path) -> None:
    output = tmp_path / "items.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "crawlstore.crawl", "demo_shop", "--output", str(output), "--max-pages", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["item_count"] == 24 == len(read_items(output))
    assert "Spider closed (finished)" in done.stderr


def test_crawl_result_reports_progress_numbers(demo_env: RunningSite, tmp_path: Path) -> None:
    result = run_crawl(DEMO_SHOP, tmp_path / "items.jsonl", max_pages=1)
    assert isinstance(result, CrawlResult)
    # 24 product pages, the listing page and robots.txt; the forbidden page is never requested.
    assert (result.item_count, result.pages, result.requests, result.robots_forbidden) == (24, 26, 26, 1)
    assert result.duration_s > 0 and result.items_per_s > 0
    assert result.stats["finish_reason"] == "finished"

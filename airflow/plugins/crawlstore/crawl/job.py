"""One crawl in this process (the child `run_crawl` starts): run the source's spider, judge the
outcome, and move the output file into place only when the crawl succeeded."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from scrapy.crawler import AsyncCrawlerProcess
from scrapy.settings import Settings

from crawlstore.crawl import settings as project_settings
from crawlstore.crawl.pipelines import STAT_WRITE_ERRORS, STAT_WRITTEN
from crawlstore.crawl.runner import partial_path
from crawlstore.crawl.spiders import SPIDERS
from crawlstore.sources import Source

logger = logging.getLogger(__name__)


def crawl_settings(
    source: Source, output: Path, *, timeout_s: float | None, overrides: Mapping[str, Any] | None
) -> Settings:
    """Project defaults < the source's own settings < this run's overrides."""
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    settings.update(dict(source.crawl_settings), priority="spider")
    settings.update(dict(overrides or {}), priority="cmdline")
    settings.set("CRAWLSTORE_OUTPUT", str(output), priority="cmdline")
    if timeout_s:
        # Close gracefully (and report) before the parent's hard deadline.
        settings.set("CLOSESPIDER_TIMEOUT", timeout_s, priority="cmdline")
    return settings


def _judge(
    source: Source, stats: Mapping[str, Any], start_failure: str | None, timeout_s: float | None
) -> tuple[str, str] | None:
    """(reason, message) when the crawl failed, None when it succeeded."""
    if start_failure:
        reason, _, message = start_failure.partition(": ")
        return reason, message
    finish = stats.get("finish_reason")
    written = int(stats.get(STAT_WRITTEN, 0))
    if finish == "closespider_timeout":
        return "timeout", f"the crawl did not finish within {timeout_s:g} s ({written} item(s) so far)"
    if finish != "finished":
        return "interrupted", f"the crawl stopped early ({finish}) after {written} item(s)"
    if stats.get(STAT_WRITE_ERRORS):
        return "write_error", f"{stats[STAT_WRITE_ERRORS]} item(s) could not be written"
    if written == 0:
        pages = stats.get("response_received_count", 0)
        return "no_items", (
            f"the crawl of {source.start_url} yielded no items ({pages} response(s) received); "
            "check the source's URL and selectors"
        )
    return None


def _jsonable(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v if isinstance(v, int | float | str) else str(v)
        for k, v in sorted(stats.items())
    }


def _publish(tmp: Path, output: Path) -> None:
    """Atomically replace `output` with the finished file (same directory, so same filesystem)."""
    os.replace(tmp, output)
    fd = os.open(output.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def crawl_here(
    source: Source,
    output: Path,
    *,
    max_pages: int | None = None,
    timeout_s: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Crawl `source` (start URL resolved) into `output`; the run's summary as a JSON-able dict."""
    output = output.resolve()
    tmp = partial_path(output, os.getpid())
    process = AsyncCrawlerProcess(crawl_settings(source, tmp, timeout_s=timeout_s, overrides=overrides))
    crawler = process.create_crawler(SPIDERS[source.spider])
    process.crawl(crawler, source=source, max_pages=max_pages)
    started = time.monotonic()
    process.start()
    duration = time.monotonic() - started

    stats = crawler.stats.get_stats() if crawler.stats else {}
    start_failure = getattr(crawler.spider, "start_failure", None) if crawler.spider else None
    failure = _judge(source, stats, start_failure, timeout_s)
    if failure is None:
        _publish(tmp, output)
    else:
        tmp.unlink(missing_ok=True)
    items = int(stats.get(STAT_WRITTEN, 0))
    summary = {
        "ok": failure is None,
        "reason": failure[0] if failure else None,
        "error": failure[1] if failure else None,
        "source": source.name,
        "start_url": source.start_url,
        "output": str(output),
        "item_count": items if failure is None else 0,
        "pages": int(stats.get("response_received_count", 0)),
        "requests": int(stats.get("downloader/request_count", 0)),
        "errors": int(stats.get("log_count/ERROR", 0)),
        "robots_forbidden": int(stats.get("robotstxt/forbidden", 0)),
        "item_pages_failed": int(stats.get("crawlstore/item_pages_failed", 0)),
        "duration_s": round(duration, 3),
        "stats": _jsonable(stats),
    }
    if failure:
        logger.error("crawl of %s failed (%s): %s", source.name, *failure)
    else:
        logger.info("crawled %d item(s) from %s in %.1f s into %s", items, source.name, duration, output)
    return summary

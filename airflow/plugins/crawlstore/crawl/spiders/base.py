"""What both spiders share: a Source to crawl, the start request, and why it failed if it did."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.python.failure import Failure

from crawlstore.crawl.normalise import normalise
from crawlstore.sources import Source

logger = logging.getLogger(__name__)


class SourceSpider(scrapy.Spider):
    """A spider driven by a `Source` (its start URL already resolved)."""

    def __init__(self, source: Source, max_pages: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.max_pages = max_pages
        host = urlsplit(source.start_url).hostname
        if not host:
            raise ValueError(f"source {source.name}: start_url {source.start_url!r} has no host")
        # Stay on the source's site: links elsewhere are not ours to crawl.
        self.allowed_domains = [host]
        # Set when the start request fails; the crawl job turns it into CrawlFailed.
        self.start_failure: str | None = None

    async def start(self) -> AsyncIterator[Any]:
        yield scrapy.Request(
            self.source.start_url, callback=self.parse, errback=self.start_failed, meta={"page_number": 1}
        )

    def start_failed(self, failure: Failure) -> None:
        url = self.source.start_url
        error = failure.value
        reason = failure.getErrorMessage()
        if isinstance(error, HttpError):
            self.start_failure = f"http_error: start page {url} answered HTTP {error.response.status}"
        # Recent Scrapy wraps Twisted's connection errors in its own; accept either.
        elif isinstance(error, CannotResolveHostError | DNSLookupError):
            self.start_failure = f"unreachable: cannot resolve the host of {url} ({reason})"
        elif isinstance(
            error, DownloadConnectionRefusedError | DownloadTimeoutError | ConnectError | TimeoutError
        ):
            self.start_failure = f"unreachable: cannot connect to {url} ({reason})"
        elif isinstance(error, IgnoreRequest):
            self.start_failure = f"forbidden: start page {url} was not fetched ({reason})"
        else:
            self.start_failure = f"start_failed: start page {url} failed: {reason}"
        logger.error("%s", self.start_failure)

    def may_follow(self, response: Response) -> bool:
        """Whether another listing/API page may be fetched after this one (max_pages)."""
        number = int(response.meta.get("page_number", 1))
        return self.max_pages is None or number < self.max_pages

    def make_item(self, raw: dict[str, Any], page_url: str) -> dict[str, Any]:
        return normalise(
            self.source.kind, raw, page_url=page_url, source=self.source.name, crawled_at=datetime.now(UTC)
        )

"""A generic catalogue spider: listing pages → detail pages → one item per detail page.

Everything site-specific comes from the Source's selectors (see crawlstore.sources).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from crawlstore.crawl.extract import first_or_joined, from_page, select
from crawlstore.crawl.spiders.base import SourceSpider

logger = logging.getLogger(__name__)


class CatalogueSpider(SourceSpider):
    name = "catalogue"

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        """A listing page: follow every item link, then the next listing page."""
        selectors = self.source.selectors
        links = select(response, selectors["item_links"])
        if not links:
            logger.warning("no item links on listing page %s", response.url)
        for href in links:
            yield response.follow(href, callback=self.parse_item, errback=self.item_page_failed)
        next_page = first_or_joined(response, selectors["next_page"]) if "next_page" in selectors else None
        if next_page and self.may_follow(response):
            number = int(response.meta.get("page_number", 1)) + 1
            yield response.follow(next_page, callback=self.parse, meta={"page_number": number})

    def item_page_failed(self, failure: Failure) -> None:
        """A listed item whose page could not be fetched: counted and logged, never silent."""
        error = failure.value
        if isinstance(error, IgnoreRequest) and not isinstance(error, HttpError):
            return  # robots.txt or the offsite filter said no: not an error of the site
        request = getattr(failure, "request", None)  # set by Scrapy on errback failures
        logger.error("item page %s failed: %s", getattr(request, "url", "?"), failure.getErrorMessage())
        if crawler := getattr(self, "crawler", None):
            crawler.stats.inc_value("crawlstore/item_pages_failed")

    def parse_item(self, response: Response) -> Iterator[dict[str, Any]]:
        """A detail page: one item, every configured field (None where the page has none)."""
        raw = {name: from_page(response, rule) for name, rule in self.source.field_selectors.items()}
        yield self.make_item(raw, response.url)

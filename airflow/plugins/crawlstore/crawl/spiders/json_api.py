"""A generic JSON API spider: one item per record, fields mapped by the Source's selectors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from scrapy.http import Response, TextResponse

from crawlstore.crawl.extract import api_records, dig
from crawlstore.crawl.spiders.base import SourceSpider

logger = logging.getLogger(__name__)


class JsonApiSpider(SourceSpider):
    name = "json_api"

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        first = int(response.meta.get("page_number", 1)) == 1
        try:
            if not isinstance(response, TextResponse):
                raise ValueError(f"binary response ({response.headers.get('Content-Type')!r})")
            data = json.loads(response.text)
        except ValueError as exc:
            self._bad_page(response, f"is not JSON: {exc}", first)
            return
        selectors = self.source.selectors
        try:
            found, not_objects = api_records(data, self.source.field_selectors, selectors.get("records", ""))
        except ValueError as exc:
            self._bad_page(response, str(exc), first)
            return
        if not_objects:
            # Not items of any kind: nothing to validate, so say so loudly instead.
            logger.error("%d record(s) of %s are not JSON objects", not_objects, response.url)
            if crawler := getattr(self, "crawler", None):
                crawler.stats.inc_value("crawlstore/non_object_records", not_objects)
        for raw in found:
            yield self.make_item(raw, response.url)
        next_page = dig(data, selectors["next_page"]) if "next_page" in selectors else None
        if isinstance(next_page, str) and next_page and self.may_follow(response):
            number = int(response.meta.get("page_number", 1)) + 1
            yield response.follow(next_page, callback=self.parse, meta={"page_number": number})

    def _bad_page(self, response: Response, problem: str, first: bool) -> None:
        message = f"response from {response.url} {problem}"
        if first:
            self.start_failure = f"bad_response: {message}"
        logger.error("%s", message)

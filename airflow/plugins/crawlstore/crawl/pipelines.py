"""Item pipeline: write every item as one line of UTF-8 JSON (JSON Lines)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Self

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

STAT_WRITTEN = "crawlstore/items_written"
STAT_WRITE_ERRORS = "crawlstore/write_errors"


class JsonLinesWriter:
    """Appends each item to the file named by the CRAWLSTORE_OUTPUT setting, one JSON per line."""

    def __init__(self, path: Path, stats: StatsCollector) -> None:
        self.path = path
        self.stats = stats
        self._file: IO[str] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        output = crawler.settings.get("CRAWLSTORE_OUTPUT")
        if not output:
            # Not NotConfigured: a crawl that silently writes nothing is worse than one that fails.
            raise ValueError("CRAWLSTORE_OUTPUT is not set: nowhere to write items")
        assert crawler.stats is not None
        return cls(Path(output), crawler.stats)

    def open_spider(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8", newline="\n")
        self.stats.set_value(STAT_WRITTEN, 0)

    def process_item(self, item: Any) -> Any:
        assert self._file is not None
        line = json.dumps(ItemAdapter(item).asdict(), ensure_ascii=False)
        try:
            self._file.write(line + "\n")
        except OSError:
            self.stats.inc_value(STAT_WRITE_ERRORS)
            raise
        self.stats.inc_value(STAT_WRITTEN)
        return item

    def close_spider(self) -> None:
        if self._file is None:
            return
        # On disk before the crawl job renames the file into place.
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        logger.info("wrote %d item(s) to %s", self.stats.get_value(STAT_WRITTEN, 0), self.path)

"""The Scrapy project: settings, a generic catalogue spider, a JSON API spider, a JSON Lines
writer, and `run_crawl`, which runs one crawl in a child process.

    from crawlstore.crawl import CrawlFailed, run_crawl
    result = run_crawl(get_source("demo_shop"), Path("items.jsonl"), max_pages=2)
"""

from crawlstore.crawl.runner import CrawlFailed, CrawlResult, run_crawl

__all__ = ["CrawlFailed", "CrawlResult", "run_crawl"]

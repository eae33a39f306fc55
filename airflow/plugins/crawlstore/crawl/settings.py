"""Scrapy settings of the crawlstore project: polite by default.

A source may loosen or tighten them for its own site (`Source.crawl_settings`), and a run may
override them (`run_crawl(settings=...)`, CLI `-s NAME=VALUE`).
"""

import os

BOT_NAME = "crawlstore"

SPIDER_MODULES = ["crawlstore.crawl.spiders"]
NEWSPIDER_MODULE = "crawlstore.crawl.spiders"

ADDONS: dict[str, int] = {}

# Crawl responsibly by identifying yourself and how to reach you: operators set
# CRAWLSTORE_CONTACT (a URL or mailto:) to their own; the default is only a placeholder.
USER_AGENT = f"crawlstore/0.1 (+{os.environ.get('CRAWLSTORE_CONTACT', 'https://example.org/crawlstore-bot')})"

# Obey robots.txt rules.
ROBOTSTXT_OBEY = True

# One site at a time, gently: few parallel requests per site, a delay between them that
# AutoThrottle raises when the site slows down.
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 0.5
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0

# Fail fast on dead sites, retry what is transient (5xx, 408, 429) a couple of times.
DOWNLOAD_TIMEOUT = 30
RETRY_ENABLED = True
RETRY_TIMES = 2
# Pages bigger than this are not catalogue pages; don't let one exhaust memory.
DOWNLOAD_MAXSIZE = 32 * 1024 * 1024
DOWNLOAD_WARNSIZE = 4 * 1024 * 1024

# Catalogue pages don't need sessions; no cookies means no accidental per-user content.
COOKIES_ENABLED = False
# No consoles into a crawl: telnet, or the HTTP code-execution endpoint Scrapy 2.19 enables
# by default (it also writes job files into the user's home directory).
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

ITEM_PIPELINES = {
    "crawlstore.crawl.pipelines.JsonLinesWriter": 800,
}
# Where JsonLinesWriter writes (set per run by the crawl job).
CRAWLSTORE_OUTPUT = ""

LOG_LEVEL = "INFO"
# Progress lines ("Crawled N pages, scraped M items") often enough to follow a run in Airflow.
LOGSTATS_INTERVAL = 10.0

FEED_EXPORT_ENCODING = "utf-8"

"""A generated demo shop (HTML catalogue), sensor API (JSON), coin ticker API (JSON) and coin
news site (HTML with JSON-LD) to crawl, served locally.

Deterministic: the same request gets the same bytes on every run. A declared set of broken
and hostile items is mixed in; `expected_outcomes()` says what validation should make of them.

    python -m demo.site serve --host 127.0.0.1 --port 8000

    with running() as site:          # in-process, on a free port
        crawl(site.url + "/catalogue/page/1.html")
"""

from demo.site.catalogue import DemoProduct, products
from demo.site.coin_news import DemoArticle, articles
from demo.site.coins import DemoQuote, quotes
from demo.site.manifest import Outcomes, expected_outcomes, failing_fields, label_of
from demo.site.pages import render
from demo.site.sensors import DEMO_SINCE, DEMO_UNTIL, DemoReading, readings
from demo.site.server import RunningSite, make_server, running, serve

__all__ = [
    "DEMO_SINCE",
    "DEMO_UNTIL",
    "DemoArticle",
    "DemoProduct",
    "DemoQuote",
    "DemoReading",
    "Outcomes",
    "RunningSite",
    "articles",
    "expected_outcomes",
    "failing_fields",
    "label_of",
    "make_server",
    "products",
    "quotes",
    "readings",
    "render",
    "running",
    "serve",
]

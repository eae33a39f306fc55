"""A generated demo shop (HTML catalogue) and sensor API (JSON) to crawl, served locally.

Deterministic: the same request gets the same bytes on every run. A declared set of broken
and hostile items is mixed in; `expected_outcomes()` says what validation should make of them.

    python -m crawlstore.demosite serve --host 127.0.0.1 --port 8000

    with running() as site:          # in-process, on a free port
        crawl(site.url + "/catalogue/page/1.html")
"""

from crawlstore.demosite.catalogue import DemoProduct, products
from crawlstore.demosite.manifest import Outcomes, expected_outcomes, failing_fields, label_of
from crawlstore.demosite.pages import render
from crawlstore.demosite.sensors import DEMO_SINCE, DEMO_UNTIL, DemoReading, readings
from crawlstore.demosite.server import RunningSite, make_server, running, serve

__all__ = [
    "DEMO_SINCE",
    "DEMO_UNTIL",
    "DemoProduct",
    "DemoReading",
    "Outcomes",
    "RunningSite",
    "expected_outcomes",
    "failing_fields",
    "label_of",
    "make_server",
    "products",
    "readings",
    "render",
    "running",
    "serve",
]

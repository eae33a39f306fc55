"""Serve the demo site with the standard library's threading HTTP server."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from demo.site.pages import render

logger = logging.getLogger(__name__)


class DemoServer(ThreadingHTTPServer):
    """A threading HTTP server that counts the paths it was asked for."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops connection bursts; dropped SYNs are retried
    # only after a second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, DemoRequestHandler)
        self.hits: Counter[str] = Counter()
        self._hits_lock = threading.Lock()

    def count(self, path: str) -> None:
        with self._hits_lock:
            self.hits[path] += 1

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class DemoRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections open between requests, as a real site would.
    protocol_version = "HTTP/1.1"
    server_version = "crawlstore-demosite/0.1"
    # Headers and body go out in separate writes; with Nagle on, each response would wait
    # for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: DemoServer

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        self.server.count(self.path.split("?", 1)[0])
        page = render(self.path)
        self.send_response(page.status)
        self.send_header("Content-Type", page.content_type)
        self.send_header("Content-Length", str(len(page.body)))
        if page.location:
            self.send_header("Location", page.location)
        self.end_headers()
        if not head:
            self.wfile.write(page.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def make_server(host: str = "127.0.0.1", port: int = 0) -> DemoServer:
    """Bind the demo site to host:port (port 0 picks a free one); call serve_forever() to run."""
    return DemoServer((host, port))


def serve(host: str, port: int) -> None:
    """Serve until interrupted (the CLI)."""
    with make_server(host, port) as server:
        logger.info(
            "demo site at %s (robots.txt, /catalogue/page/1.html, /api/readings, /api/coins/ticker, "
            "/coins/news/page/1.html)",
            server.url,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logger.info("stopping")


@dataclass
class RunningSite:
    """A demo site running in a background thread of this process."""

    url: str
    hits: Counter[str] = field(default_factory=Counter)


@contextmanager
def running(host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningSite]:
    """Run the demo site in a thread for the `with` block; yields its base URL and hit counts."""
    server = make_server(host, port)
    thread = threading.Thread(target=server.serve_forever, name="demosite", daemon=True)
    thread.start()
    logger.info("demo site running at %s", server.url)
    try:
        yield RunningSite(server.url, server.hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

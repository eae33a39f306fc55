"""`/health` and `/metrics` over HTTP (stdlib http.server in a daemon thread)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from consumers.metrics import ConsumerMetrics

log = logging.getLogger(__name__)


class MetricsEndpoint:
    def __init__(self, host: str, port: int, metrics: ConsumerMetrics) -> None:
        handler = _handler(metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on http://%s:%d/health and /metrics", *self.address)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: ConsumerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                health = metrics.health()
                body = json.dumps(
                    {
                        "status": "ok" if health.ok else "unavailable",
                        "state": health.state,
                        "assigned_partitions": health.assigned,
                        "detail": health.detail,
                    }
                ).encode()
                self._send(200 if health.ok else 503, "application/json", body)
            elif path == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render().encode())
            else:
                self._send(404, "text/plain", b"not found: try /health or /metrics\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    return Handler

"""HTTP endpoints of a worker: `/metrics` (Prometheus text format), `/healthz`
(liveness: 503 once the consumer is stalled) and `/readyz` (readiness: 503 while Redis
is unreachable or no partition is assigned). Served from a daemon thread so a scrape
never waits for the fold, and the fold never waits for a scrape."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class MetricsServer:
    """Serves the registry on `host:port` (port 0 picks a free one; see `port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        live: Callable[[], bool] = lambda: True,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = outer.live()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
                elif path == "/readyz":
                    ok = outer.ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                elif path == "/":
                    self._send(200, b'<html><body><a href="/metrics">/metrics</a> '
                                    b'<a href="/healthz">/healthz</a> '
                                    b'<a href="/readyz">/readyz</a></body></html>',
                               "text/html")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the log

        self.registry = registry
        self.live = live
        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""HTTP endpoints of a worker: `/metrics` (Prometheus text format), `/healthz`
(liveness: 503 once the consumer is stalled) and `/readyz` (readiness: 503 while Redis
is unreachable or no partition is assigned). Served from a daemon thread so a scrape
never waits for the fold, and the fold never waits for a scrape."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
                self._answer(with_body=True)

            def do_HEAD(self) -> None:
                # The same status and headers as GET (Content-Length included), no body.
                self._answer(with_body=False)

            def _answer(self, with_body: bool) -> None:
                self._with_body = with_body
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
                if self._with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the log

        self.registry = registry
        self.live = live
        self.ready = ready
        family, address = _bind_address(host, port)

        class Server(ThreadingHTTPServer):
            address_family = family

        try:
            self._server = Server(address, Handler)
        except OSError as exc:
            raise BindError(_bind_problem(host, port, exc)) from None
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


class BindError(Exception):
    """/metrics cannot be served on the host and port given; the message is one line
    naming the setting to change."""


def _bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The address family and socket address to bind `host` (a name, an IPv4 or an IPv6
    address such as `::` or `::1`, brackets allowed) and `port`. A name with both kinds of
    addresses binds its IPv4 one, as before IPv6 was supported."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BindError(f"cannot serve /metrics: STREAM_METRICS_HOST {host!r} does not "
                        f"resolve ({why}): use an address of this machine, 0.0.0.0 or ::"
                        ) from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, address = infos[0]
    return family, address


def check_bindable(host: str) -> None:
    """Raise BindError unless `host` can be bound (on a free port): for callers that start
    the server late, after other processes, and want to stop before those instead."""
    family, address = _bind_address(host, 0)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            raise BindError(_bind_problem(host, 0, exc)) from None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = host if ":" not in host else f"[{host.strip('[]')}]"
    where += f":{port}" if port else ""
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot serve /metrics on {where}: the port is in use; set "
                f"STREAM_METRICS_PORT to a free port (0: any free one) or stop what holds it")
    if exc.errno == errno.EACCES:
        return (f"cannot serve /metrics on {where}: no permission to bind the port; set "
                f"STREAM_METRICS_PORT to 1024 or above")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return (f"cannot serve /metrics on {where}: {exc.strerror}; set STREAM_METRICS_HOST "
                f"to an address of this machine, 0.0.0.0 or ::")
    return (f"cannot serve /metrics on {where}: {exc.strerror or exc}; check "
            f"STREAM_METRICS_HOST and STREAM_METRICS_PORT")

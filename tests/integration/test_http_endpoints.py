"""The metrics server: HEAD answers like GET without a body on every path, and IPv6 hosts
(`::`, `::1`) are bound as IPv6. Against the real server on real sockets."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from stream.metrics.httpserver import BindError, MetricsServer

PATHS = ["/metrics", "/healthz", "/readyz", "/", "/nowhere", "/metrics?x=1"]


def request(host: str, port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("probe_hits", "a sample so /metrics has a body", registry=registry).inc(3)
    srv = MetricsServer(registry, "127.0.0.1", 0, live=lambda: True, ready=lambda: False)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("path", PATHS)
def test_head_answers_like_get_without_a_body(server: MetricsServer, path: str) -> None:
    get_status, get_headers, get_body = request("127.0.0.1", server.port, "GET", path)
    head_status, head_headers, head_body = request("127.0.0.1", server.port, "HEAD", path)
    assert head_status == get_status != 501
    assert head_body == b""
    assert get_body and int(head_headers["content-length"]) == len(get_body)
    assert head_headers["content-type"] == get_headers["content-type"]


def test_head_statuses(server: MetricsServer) -> None:
    assert request("127.0.0.1", server.port, "HEAD", "/metrics")[0] == 200
    assert request("127.0.0.1", server.port, "HEAD", "/healthz")[0] == 200
    assert request("127.0.0.1", server.port, "HEAD", "/readyz")[0] == 503  # not ready
    assert request("127.0.0.1", server.port, "HEAD", "/nowhere")[0] == 404


@pytest.mark.parametrize("host", ["::1", "[::1]", "::"])
def test_ipv6_hosts_are_bound(host: str) -> None:
    srv = MetricsServer(CollectorRegistry(), host, 0)
    srv.start()
    try:
        assert srv._server.socket.family == socket.AF_INET6
        status, _, body = request("::1", srv.port, "GET", "/healthz")
        assert (status, body) == (200, b"ok\n")
    finally:
        srv.stop()


def test_ipv4_host_stays_ipv4_only() -> None:
    srv = MetricsServer(CollectorRegistry(), "127.0.0.1", 0)
    srv.start()
    try:
        assert srv._server.socket.family == socket.AF_INET
        with pytest.raises(OSError):
            request("::1", srv.port, "GET", "/healthz")
    finally:
        srv.stop()


def test_port_in_use_is_a_bind_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BindError, match="STREAM_METRICS_PORT"):
            MetricsServer(CollectorRegistry(), "127.0.0.1", port)

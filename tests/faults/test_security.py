"""Fault 8: security settings. Redis AUTH over TLS (`rediss://`) with the URL read from
a file; Kafka SASL and SSL options; secrets never logged, exported or dead-lettered; the
/metrics bind address is configurable."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from stream.kafka.config import KafkaConfig
from stream.metrics.httpserver import MetricsServer
from stream.settings import SettingsError, load
from tests.faults.harness import (
    assert_exact,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    produce_all,
    wait_applied,
    wait_lag_zero,
)
from tests.support.kafka import Topics, consume_all
from tests.support.workers import ROOT, WorkerProcess, wait_until

REDIS_PASSWORD = "s3cret-redis-Pa55"
SASL_PASSWORD = "s3cret-sasl-Pa55"
KEY_PASSWORD = "s3cret-key-Pa55"


def make_certs(d: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl command line)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.crt", "-days", "2", "-subj", "/CN=engagement-stream test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    run("pkey", "-in", "server.key", "-out", "client.key", "-aes256", "-passout",
        f"pass:{KEY_PASSWORD}")
    return {name: d / name for name in ("ca.crt", "server.crt", "server.key", "client.key")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_auth_over_tls_secrets_never_leak(broker: TansuBroker, topics: Topics,
                                                tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    tls_port = free_port()
    server = RedisServer(password=REDIS_PASSWORD, extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs["server.crt"]),
        "--tls-key-file", str(certs["server.key"]), "--tls-ca-cert-file",
        str(certs["ca.crt"]), "--tls-auth-clients", "no"])
    truth = make_dataset(topics, 3_000, seed=12)
    produce_all(broker.bootstrap, truth.messages)
    with server, RedisServer() as ref:
        url_file = tmp_path / "redis-url"
        url_file.write_text(f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{tls_port}/0"
                            f"?ssl_ca_certs={certs['ca.crt']}\n")
        env = env_for(broker.bootstrap, "redis://placeholder:1/0", topics, truth,
                      STREAM_REDIS_URL_FILE=str(url_file), STREAM_LOG_LEVEL="DEBUG")
        del env["STREAM_REDIS_URL"]
        worker = WorkerProcess(env).start()
        with logged_workers(worker):
            wait_applied(server.url, input_highwaters(broker.bootstrap, topics), 120)
            wait_lag_zero([worker])
            assert_exact(server.url, truth, ref)
            _, metrics = worker.get("/metrics")
            assert "engagement_events_total" in metrics
            assert REDIS_PASSWORD not in metrics
            # The report command reads the same secret file.
            out = subprocess.run([sys.executable, "-m", "stream", "report", "--json"],
                                 env=env, cwd=ROOT, capture_output=True, text=True,
                                 timeout=60, check=True)
            assert '"events_total"' in out.stdout
            assert REDIS_PASSWORD not in out.stdout + out.stderr
            assert worker.stop() == 0
            assert REDIS_PASSWORD not in worker.log()
    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter, timeout=30))
    assert len(dead) >= sum(truth.dead_letters.values())
    for m in dead:
        for value in m.headers.values():
            assert REDIS_PASSWORD.encode() not in value


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_wrong_redis_password_is_an_outage_not_a_leak(broker: TansuBroker, topics: Topics,
                                                      redis_server: RedisServer) -> None:
    with RedisServer(password=REDIS_PASSWORD) as server:
        wrong = server.url.replace(REDIS_PASSWORD, "not-the-" + SASL_PASSWORD)
        env = env_for(broker.bootstrap, wrong, topics, make_dataset(topics, 500, seed=13))
        worker = WorkerProcess(env).start()
        try:
            wait_until(lambda: "Redis unavailable" in worker.log(), 30, "the failed AUTH")
            assert worker.get("/readyz")[0] == 503
            assert worker.get("/healthz")[0] == 200
            assert worker.proc is not None and worker.proc.poll() is None
            assert worker.stop() == 0
            log = worker.log()
            assert SASL_PASSWORD not in log and REDIS_PASSWORD not in log
        finally:
            worker.stop()


def test_secrets_from_files_and_never_in_errors(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)
    (tmp_path / "sasl").write_text(SASL_PASSWORD + "\n")
    (tmp_path / "url").write_text(f"redis://:{REDIS_PASSWORD}@10.0.0.1:6380/0")
    monkeypatch.setenv("STREAM_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "sasl"))
    monkeypatch.setenv("STREAM_REDIS_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("STREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAM_KAFKA_SASL_USERNAME", "stream")
    s = load()
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == SASL_PASSWORD
    assert s.redis_url.get_secret_value().endswith("@10.0.0.1:6380/0")
    for text in (repr(s), str(s), str(s.model_dump())):
        assert SASL_PASSWORD not in text and REDIS_PASSWORD not in text
    opts = KafkaConfig.from_settings(s).aiokafka()
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "stream"
    assert opts["sasl_plain_password"] == SASL_PASSWORD
    assert opts["security_protocol"] == "SASL_PLAINTEXT"
    # A bad secret value is named, never shown.
    (tmp_path / "url").write_text(f"http://:{REDIS_PASSWORD}@host/0")
    with pytest.raises(SettingsError) as err:
        load()
    assert "STREAM_REDIS_URL" in str(err.value) and REDIS_PASSWORD not in str(err.value)
    # A missing secret file is one clear line.
    monkeypatch.setenv("STREAM_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="STREAM_KAFKA_SASL_PASSWORD_FILE"):
        load()


def test_kafka_ssl_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = make_certs(tmp_path)
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)
    (tmp_path / "keypass").write_text(KEY_PASSWORD)
    s = load({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
              "kafka_sasl_username": "u", "kafka_sasl_password": SASL_PASSWORD,
              "kafka_ssl_cafile": str(certs["ca.crt"]),
              "kafka_ssl_certfile": str(certs["server.crt"]),
              "kafka_ssl_keyfile": str(certs["client.key"]),
              "kafka_ssl_password": KEY_PASSWORD})
    opts = KafkaConfig.from_settings(s).aiokafka()
    assert opts["security_protocol"] == "SASL_SSL"
    ctx = opts["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert SASL_PASSWORD not in repr(s) and KEY_PASSWORD not in repr(s)
    with pytest.raises(SettingsError, match="STREAM_KAFKA_SASL_MECHANISM"):
        load({"kafka_security_protocol": "SASL_SSL"})


def test_metrics_bind_address_is_configurable() -> None:
    server = MetricsServer(CollectorRegistry(), "127.0.0.2", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.2:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    finally:
        server.stop()

"""`stream.kafka.config`: the settings rendered into aiokafka's keyword options and
librdkafka's configuration. The expected dicts are written out by hand (what each client
documents for these settings), not computed by the code under test."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
from pathlib import Path

import pytest

from stream.kafka.config import KafkaConfig
from stream.settings import Settings

KEY_PASSWORD = "key-Pa55-for-test"
SASL_PASSWORD = "sasl-Pa55-for-test"


@pytest.fixture(autouse=True)
def _no_stream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, and a client certificate signed by it with its key encrypted (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.crt", "-days", "2", "-subj", "/CN=engagement-stream unit CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "plain.key", "-out",
        "client.csr", "-subj", "/CN=client")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.crt", "-days", "2")
    run("pkey", "-in", "plain.key", "-out", "client.key", "-aes256", "-passout",
        f"pass:{KEY_PASSWORD}")
    return {name: d / name for name in ("ca.crt", "client.crt", "client.key")}


def without_logger(conf: dict[str, object]) -> dict[str, object]:
    """librdkafka's configuration less its logger (checked on its own: an object)."""
    assert conf["logger"] is logging.getLogger("stream.kafka.librdkafka")
    return {k: v for k, v in conf.items() if k != "logger"}


def test_plaintext_defaults() -> None:
    config = KafkaConfig.from_settings(Settings(kafka_brokers="k1:9092,k2:9093"))
    assert config.aiokafka() == {"bootstrap_servers": "k1:9092,k2:9093",
                                 "security_protocol": "PLAINTEXT"}
    assert config.ssl_context() is None
    assert without_logger(config.librdkafka()) == {
        "bootstrap.servers": "k1:9092,k2:9093",
        "group.id": "engagement-stream",
        "client.id": "engagement-stream",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 3000,
        "partition.assignment.strategy": "roundrobin",
        "fetch.queue.backoff.ms": 100,
        "fetch.max.bytes": 67108864,
        "max.partition.fetch.bytes": 8388608,
        "check.crcs": True,
        "security.protocol": "PLAINTEXT",
    }


def test_fetch_sizes_session_group_and_client_id() -> None:
    config = KafkaConfig.from_settings(Settings(
        kafka_brokers="broker:9092", consumer_group="team-a", session_timeout_ms=30000,
        heartbeat_interval_ms=9000))
    assert config.aiokafka(fetch=True, group=True, client_id="doctor") == {
        "bootstrap_servers": "broker:9092",
        "security_protocol": "PLAINTEXT",
        "client_id": "doctor",
        "fetch_max_bytes": 67108864,
        "max_partition_fetch_bytes": 8388608,
        "session_timeout_ms": 30000,
        "heartbeat_interval_ms": 9000,
    }
    rd = config.librdkafka()
    assert (rd["group.id"], rd["session.timeout.ms"], rd["heartbeat.interval.ms"]) == (
        "team-a", 30000, 9000)
    assert (rd["fetch.max.bytes"], rd["max.partition.fetch.bytes"]) == (67108864, 8388608)
    # a group given by the caller wins over the settings' one
    assert config.librdkafka("other")["group.id"] == "other"


def test_sasl_plaintext_without_tls() -> None:
    config = KafkaConfig.from_settings(Settings(
        kafka_brokers="b:9092", kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="u",
        kafka_sasl_password=SASL_PASSWORD))
    assert config.aiokafka() == {"bootstrap_servers": "b:9092",
                                 "security_protocol": "SASL_PLAINTEXT",
                                 "sasl_mechanism": "SCRAM-SHA-256",
                                 "sasl_plain_username": "u",
                                 "sasl_plain_password": SASL_PASSWORD}
    rd = without_logger(config.librdkafka())
    assert {k: v for k, v in rd.items() if k.startswith(("sasl.", "ssl.", "security."))} == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "u",
        "sasl.password": SASL_PASSWORD,
    }
    assert SASL_PASSWORD not in repr(config)


def test_sasl_ssl_with_files(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    config = KafkaConfig.from_settings(Settings(
        kafka_brokers="secure:9093", kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN", kafka_sasl_username="svc",
        kafka_sasl_password=SASL_PASSWORD, kafka_ssl_cafile=str(certs["ca.crt"]),
        kafka_ssl_certfile=str(certs["client.crt"]),
        kafka_ssl_keyfile=str(certs["client.key"]), kafka_ssl_password=KEY_PASSWORD))
    opts = config.aiokafka()
    context = opts.pop("ssl_context")
    assert opts == {"bootstrap_servers": "secure:9093", "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "PLAIN", "sasl_plain_username": "svc",
                    "sasl_plain_password": SASL_PASSWORD}
    # the CA file is trusted and the host name is checked (the encrypted key was opened
    # with its password, or building the context would have failed)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "engagement-stream unit CA"),),)]
    rd = without_logger(config.librdkafka())
    assert {k: v for k, v in rd.items() if k.startswith(("sasl.", "ssl.", "security."))} == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc",
        "sasl.password": SASL_PASSWORD,
        "ssl.ca.location": str(certs["ca.crt"]),
        "ssl.certificate.location": str(certs["client.crt"]),
        "ssl.key.location": str(certs["client.key"]),
        "ssl.key.password": KEY_PASSWORD,
    }
    assert SASL_PASSWORD not in repr(config) and KEY_PASSWORD not in repr(config)


def test_ssl_without_files_uses_the_system_cas() -> None:
    config = KafkaConfig.from_settings(Settings(kafka_brokers="b:9093",
                                                kafka_security_protocol="SSL"))
    opts = config.aiokafka()
    assert set(opts) == {"bootstrap_servers", "security_protocol", "ssl_context"}
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    rd = without_logger(config.librdkafka())
    assert {k: v for k, v in rd.items() if k.startswith(("sasl.", "ssl.", "security."))} == {
        "security.protocol": "SSL"}

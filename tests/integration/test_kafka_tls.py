"""Kafka over TLS, end to end: the embedded broker behind a TLS-terminating proxy
(`tests/support/tls.py`), advertising the proxy's address, so every Kafka connection of
the worker, its dead-letter producer and `backfill` is TLS with the CA file of
`STREAM_KAFKA_SSL_CAFILE` (host name checked). Figures exact against the oracle with both
Kafka clients; a wrong CA stops the worker and `backfill` at start with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.faults.harness import Truth, assert_exact, env_for, logged_workers, make_dataset
from tests.support.kafka import PARTITIONS, Topics, unique_topics
from tests.support.tls import Certs, TlsProxy, make_certs
from tests.support.workers import ROOT, WorkerProcess


class TlsAdvertisedTansu(TansuBroker):
    """Tansu on a plaintext port that advertises the TLS proxy's port to clients."""

    def __init__(self, tls_port: int) -> None:
        super().__init__()
        self.tls_port = tls_port

    def _argv(self) -> list[str]:
        argv = super()._argv()
        argv[argv.index("--advertised-listener-url") + 1] = f"tcp://127.0.0.1:{self.tls_port}"
        return argv


class TlsKafka:
    def __init__(self, certs: Certs, wrong: Certs, port: int) -> None:
        self.certs, self.wrong, self.port = certs, wrong, port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "security_protocol": "SSL",
                "ssl_context": create_ssl_context(cafile=str(self.certs.ca))}

    def env(self, ca: Path | None = None) -> dict[str, str]:
        return {"STREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
                "STREAM_KAFKA_SSL_CAFILE": str(ca or self.certs.ca)}


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    d = tmp_path_factory.mktemp("tls")
    certs, wrong = make_certs(d, "ca"), make_certs(d, "other")
    port = free_port()
    with TlsAdvertisedTansu(port) as broker, TlsProxy(port, broker.port, certs):
        yield TlsKafka(certs, wrong, port)


async def _create(kafka: TlsKafka, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(**kafka.options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.all])
    finally:
        await admin.close()


async def _produce(kafka: TlsKafka, truth: Truth) -> None:
    producer = AIOKafkaProducer(acks=1, enable_idempotence=False, linger_ms=5,
                                **kafka.options())
    await producer.start()
    try:
        futures = [await producer.send(t, value=v, key=k) for t, k, v in truth.messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _highwaters(kafka: TlsKafka, topics: Topics) -> dict[str, int]:
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=100, **kafka.options())
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics.inputs for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[str, int] = {}
        for _ in range(200):
            await consumer.getmany(*tps, timeout_ms=100, max_records=1)
            out = {f"{tp.topic}/{tp.partition}": h for tp in tps
                   if (h := consumer.highwater(tp)) is not None}
            if len(out) == len(tps):
                return out
        raise AssertionError("no highwater for every partition")
    finally:
        await consumer.stop()


@pytest.fixture
def tls_topics(tls_kafka: TlsKafka) -> tuple[Topics, Truth, dict[str, int]]:
    topics = unique_topics("tls")
    truth = make_dataset(topics, 1200, seed=3)
    asyncio.run(_create(tls_kafka, topics))
    asyncio.run(_produce(tls_kafka, truth))
    return topics, truth, asyncio.run(_highwaters(tls_kafka, topics))


def _wait_applied(redis_url: str, highs: dict[str, int]) -> None:
    from tests.faults.harness import wait_applied

    wait_applied(redis_url, highs, 120)


@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
def test_worker_and_backfill_over_tls_are_exact(
        tls_kafka: TlsKafka, tls_topics: tuple[Topics, Truth, dict[str, int]],
        redis_server: RedisServer, client: str) -> None:
    pytest.importorskip("confluent_kafka") if client == "confluent" else None
    topics, truth, highs = tls_topics
    env = env_for(tls_kafka.bootstrap, redis_server.url, topics, truth,
                  STREAM_KAFKA_CLIENT=client, **tls_kafka.env())
    worker = WorkerProcess(env)
    with logged_workers(worker):
        worker.start()
        _wait_applied(redis_server.url, highs)
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)
    # backfill into a fresh store over TLS: the same figures.
    with RedisServer() as fresh, RedisServer() as ref:
        out = subprocess.run(
            [sys.executable, "-m", "stream", "backfill", "--no-progress", "--from-offset", "0"],
            env={**env, "STREAM_REDIS_URL": fresh.url, "STREAM_LOG_LEVEL": "WARNING"},
            capture_output=True, text=True, timeout=180, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-3000:]
        assert_exact(fresh.url, truth, ref)


@pytest.mark.parametrize("command", [["worker"], ["backfill", "--from-offset", "0"]])
def test_wrong_ca_fails_at_start_in_one_line(
        tls_kafka: TlsKafka, redis_server: RedisServer, command: list[str]) -> None:
    topics = unique_topics("tls-ca")
    env = {**WorkerProcess(env_for(tls_kafka.bootstrap, redis_server.url, topics,
                                   make_dataset(topics, 400))).env,
           **tls_kafka.env(tls_kafka.wrong.ca)}
    out = subprocess.run([sys.executable, "-m", "stream", *command], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "STREAM_KAFKA_SSL_CAFILE" in lines[0]
    assert "certificate verify failed" in lines[0]
    assert "Traceback" not in out.stderr


def test_right_ca_passes_the_start_check(tls_kafka: TlsKafka) -> None:
    from stream.kafka.tls import tls_problem
    from stream.settings import Settings

    settings = Settings(kafka_brokers=tls_kafka.bootstrap,  # type: ignore[call-arg]
                        kafka_security_protocol="SSL", kafka_ssl_cafile=str(tls_kafka.certs.ca))
    assert tls_problem(settings) is None
    wrong = settings.model_copy(update={"kafka_ssl_cafile": str(tls_kafka.wrong.ca)})
    assert "certificate verify failed" in (tls_problem(wrong) or "")
    # A name the certificate is not for (it is for 127.0.0.1 and localhost).
    other_name = settings.model_copy(update={"kafka_brokers": f"127.0.0.2:{tls_kafka.port}"})
    problem = tls_problem(other_name) or ""
    assert problem.startswith("bad setting STREAM_KAFKA_BROKERS"), problem
    assert "mismatch" in problem

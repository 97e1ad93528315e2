"""`python -m stream doctor` against real servers: it passes on a good setup and names
each fault on a broken one (a missing topic, messages in another format, an unreachable
broker or Redis, Redis without AOF or with an evicting memory policy, a zone that does
not match the store, a taken metrics port), with exit code 0 only when all pass.

Each broken setup breaks exactly one thing, and the test checks that exactly the checks
of that thing fail (the others still pass), so a doctor that fails everything, or
nothing, cannot pass."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from stream.demo.generator import bad_message
from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.support.kafka import Topics, produce
from tests.support.workers import ROOT, worker_env


@dataclass
class Run:
    code: int
    lines: list[str]

    def failed(self) -> dict[str, list[str]]:
        """FAIL lines by check name (the second word of the line)."""
        out: dict[str, list[str]] = {}
        for line in self.lines:
            if line.startswith("FAIL "):
                name = line[5:20].strip()
                out.setdefault(name, []).append(line)
        return out

    def passed(self, name: str) -> list[str]:
        return [ln for ln in self.lines if ln.startswith("ok ") and ln[5:20].strip() == name]


def doctor(env: dict[str, str]) -> Run:
    proc = subprocess.run([sys.executable, "-m", "stream", "doctor"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Run(proc.returncode, proc.stdout.splitlines())


def _event(etype: str, i: int) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event: dict[str, object] = {"event_id": f"doc-{etype}-{i}", "type": etype,
                                "user_id": f"u{i}", "ts": now}
    if etype == "survey":
        event.update(survey="nps", score=9)
    if etype == "visit":
        event.update(campaign="spring")
    return json.dumps(event).encode()


@pytest.fixture
def good(broker: TansuBroker, topics: Topics) -> Iterator[tuple[dict[str, str], RedisServer]]:
    """A good setup: the topics exist and hold native events, Redis runs with the AOF
    and noeviction, no store yet, a free metrics port."""
    messages = [(t, f"u{i}".encode(), _event(etype, i))
                for t, etype in zip(topics.inputs, ("activity", "visit", "cancellation",
                                                    "survey"), strict=True)
                for i in range(30)]
    asyncio.run(produce(broker.bootstrap, messages))
    with RedisServer(appendonly=True) as server:
        env = worker_env(broker.bootstrap, server.url, topics.env())
        env["STREAM_METRICS_PORT"] = str(free_port())
        yield env, server


def test_a_good_setup_passes(good: tuple[dict[str, str], RedisServer],
                             topics: Topics) -> None:
    env, _ = good
    run = doctor(env)
    assert run.code == 0, "\n".join(run.lines)
    assert not run.failed()
    assert len(run.passed("topic")) == 5
    parsed = run.passed("messages")
    assert len(parsed) == 4 and all("decoded 30" in ln for ln in parsed), parsed
    for name in ("kafka", "consumer group", "redis", "persistence", "memory", "store",
                 "metrics port"):
        assert run.passed(name), f"no passing {name} line in\n" + "\n".join(run.lines)
    assert "120 message(s) to fold" in "\n".join(run.passed("consumer group"))
    assert run.lines[-1].startswith("all ")


def test_a_store_with_the_same_settings_passes(good: tuple[dict[str, str], RedisServer],
                                               broker: TansuBroker, topics: Topics) -> None:
    env, server = good
    _record_store(server.url, "Europe/Berlin")
    run = doctor({**env, "STREAM_TIMEZONE": "Europe/Berlin"})
    assert run.code == 0, "\n".join(run.lines)
    assert "timezone=Europe/Berlin" in run.passed("store")[0]


def _record_store(url: str, zone: str) -> None:
    """Record a store's fixed settings in Redis, as a first worker does."""
    from stream.app import open_store
    from stream.settings import Settings

    store = open_store(Settings(redis_url=url, timezone=zone))
    store.check_meta(record=True)
    store.close()


def test_a_missing_topic_is_named(good: tuple[dict[str, str], RedisServer],
                                  topics: Topics) -> None:
    env, _ = good
    missing = f"engagement.nowhere-{topics.suffix}"
    run = doctor({**env, "STREAM_TOPICS": f"{topics.activity},{missing}"})
    assert run.code == 1
    assert set(run.failed()) == {"topic"}, run.lines
    (line,) = run.failed()["topic"]
    assert missing in line and "does not exist" in line and "fix: create it" in line


def test_messages_in_another_format_are_named(broker: TansuBroker, topics: Topics,
                                              good: tuple[dict[str, str], RedisServer]) -> None:
    env, _ = good
    rng = random.Random(3)
    now = datetime.now(UTC)
    junk = [bad_message(rng, now, "not_json"), bad_message(rng, now, "missing_user_id"),
            json.dumps({"messageId": "m1", "type": "track", "userId": "u1"}).encode()]
    asyncio.run(produce(broker.bootstrap, [(topics.surveys, b"k", v) for v in junk]))
    run = doctor(env)
    assert run.code == 1
    assert set(run.failed()) == {"messages"}, run.lines
    (line,) = run.failed()["messages"]
    assert topics.surveys in line and "do not parse" in line
    assert "invalid_json 1" in line and "invalid_event 2" in line


def test_an_unreachable_broker_is_named(good: tuple[dict[str, str], RedisServer]) -> None:
    env, _ = good
    run = doctor({**env, "STREAM_KAFKA_BROKERS": f"127.0.0.1:{free_port()}"})
    assert run.code == 1
    assert set(run.failed()) == {"kafka"}, run.lines
    assert "STREAM_KAFKA_BROKERS" in run.failed()["kafka"][0]
    assert run.passed("redis") and run.passed("metrics port")


def test_redis_without_aof_is_named(broker: TansuBroker, topics: Topics) -> None:
    with RedisServer(appendonly=False) as server:
        env = worker_env(broker.bootstrap, server.url, topics.env())
        env["STREAM_METRICS_PORT"] = "0"
        run = doctor(env)
    assert run.code == 1
    assert set(run.failed()) == {"persistence"}, run.lines
    assert "appendonly yes" in run.failed()["persistence"][0]


def test_an_evicting_redis_is_named(broker: TansuBroker, topics: Topics) -> None:
    with RedisServer(appendonly=True, extra_args=["--maxmemory", "100mb",
                                                  "--maxmemory-policy", "allkeys-lru"]) as srv:
        env = worker_env(broker.bootstrap, srv.url, topics.env())
        env["STREAM_METRICS_PORT"] = "0"
        run = doctor(env)
    assert run.code == 1
    assert set(run.failed()) == {"memory"}, run.lines
    assert "allkeys-lru" in run.failed()["memory"][0]


def test_an_unreachable_redis_is_named(broker: TansuBroker, topics: Topics) -> None:
    env = worker_env(broker.bootstrap, f"redis://127.0.0.1:{free_port()}/0", topics.env())
    env["STREAM_METRICS_PORT"] = "0"
    run = doctor(env)
    assert run.code == 1
    assert set(run.failed()) == {"redis"}, run.lines
    assert "STREAM_REDIS_URL" in run.failed()["redis"][0]
    assert "lag unknown" in run.passed("consumer group")[0]


def test_a_zone_that_does_not_match_the_store_is_named(
        good: tuple[dict[str, str], RedisServer]) -> None:
    env, server = good
    _record_store(server.url, "UTC")
    run = doctor({**env, "STREAM_TIMEZONE": "America/New_York"})
    assert run.code == 1
    assert set(run.failed()) == {"store"}, run.lines
    line = run.failed()["store"][0]
    assert "STREAM_TIMEZONE=UTC" in line and "America/New_York" in line and "fix:" in line


def test_a_taken_metrics_port_is_named(good: tuple[dict[str, str], RedisServer]) -> None:
    env, _ = good
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = doctor({**env, "STREAM_METRICS_PORT": str(port)})
    assert run.code == 1
    assert set(run.failed()) == {"metrics port"}, run.lines
    assert f"127.0.0.1:{port} is taken" in run.failed()["metrics port"][0]

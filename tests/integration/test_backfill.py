"""`python -m stream backfill` against a real Tansu broker and redis-server.

A fresh store filled from the topics' history must equal the brute-force oracle (today,
the `previous_day_*` family and `report --day`), with the bad input dead-lettered once; a
second run reads nothing and changes nothing; the live consumer group's committed
offsets are untouched; `--from-time` replays only what was produced from then on (Tansu
answers ListOffsets by time wrongly, so this also covers the scanning fallback).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata, OffsetAndTimestamp

from stream.app import open_store, read_figures
from stream.backfill import run_backfill
from stream.demo.localservers import RedisServer, TansuBroker
from stream.settings import Settings
from stream.timebuckets import DayMapper
from tests.integration.test_timezones import expected_as_of
from tests.integration.test_worker_e2e import assert_figures_match
from tests.support import oracle
from tests.support.dataset import generate_stable
from tests.support.kafka import PARTITIONS, Topics, consume_all, produce
from tests.support.workers import (
    ROOT,
    WorkerProcess,
    folded_total,
    report_json,
    wait_until,
    worker_env,
)


def backfill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream", "backfill", "--no-progress", *args],
                          env={"STREAM_LOG_LEVEL": "WARNING", **env}, capture_output=True,
                          text=True, timeout=180, cwd=ROOT)


def expected(values: list[bytes | None], now: datetime) -> dict[str, Any]:
    want = oracle.compute_figures(values, now)
    want.update(oracle.previous_day_figures(values, now))
    return want


async def group_offsets(bootstrap: str, group: str, topics: list[str],
                        commit: int | None = None) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets of every partition (after committing `commit` on
    each, when given), read without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(tps)  # manual assignment: commits without joining the group
        if commit is not None:
            await consumer.commit({tp: OffsetAndMetadata(commit, "") for tp in tps})
        return {(tp.topic, tp.partition): await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def test_backfill_fills_a_fresh_store_idempotently(broker: TansuBroker,
                                                   redis_server: RedisServer,
                                                   topics: Topics) -> None:
    data = generate_stable(size=6000, seed=3)
    messages = topics.rename(data.messages)
    asyncio.run(produce(broker.bootstrap, messages))
    # The live group has committed offsets of its own; the backfill must not move them.
    live = asyncio.run(group_offsets(broker.bootstrap, topics.group, topics.inputs, commit=2))
    assert set(live.values()) == {2}

    env = worker_env(broker.bootstrap, redis_server.url, topics.env())
    first = backfill(env, "--from-offset", "0")
    assert first.returncode == 0, first.stderr
    assert f"{len(messages):,} of {len(messages):,} messages" in first.stderr
    got = report_json(env)
    assert_figures_match(got, expected(data.values(), data.now))
    assert got["dead_letter_total"] == data.expected_dead_letters

    # The same history produced to the dead-letter topic once, like the worker does.
    n_dead = sum(data.expected_dead_letters.values())
    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter, timeout=20))
    assert len(dead) == n_dead
    assert all(m.header("error") and m.header("source_topic") for m in dead)

    # report --day through the same store: yesterday as of its end.
    yesterday = (data.now.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    out = subprocess.run([sys.executable, "-m", "stream", "report", "--json", "--day",
                          yesterday], env=env, capture_output=True, text=True, timeout=60,
                         cwd=ROOT, check=True)
    want_day = expected_as_of(data.values(), data.now,
                              data.now.astimezone(UTC).date() - timedelta(days=1), "UTC")
    assert_figures_match(json.loads(out.stdout), want_day)

    # A second run (even from offset 0 again) reads nothing and changes nothing.
    second = backfill(env, "--from-offset", "0", "--topic", ",".join(topics.inputs))
    assert second.returncode == 0, second.stderr
    assert "done: 0 of 0 messages" in second.stderr
    assert report_json(env) == got
    assert len(asyncio.run(consume_all(broker.bootstrap, topics.dead_letter,
                                       timeout=10))) == n_dead

    assert asyncio.run(group_offsets(broker.bootstrap, topics.group, topics.inputs)) == live


def test_backfill_from_time(broker: TansuBroker, redis_server: RedisServer,
                            topics: Topics) -> None:
    data = generate_stable(size=2000, seed=4)
    messages = topics.rename(data.messages)
    half = len(messages) // 2
    asyncio.run(produce(broker.bootstrap, messages[:half]))
    time.sleep(0.3)
    cut = datetime.now(UTC)
    time.sleep(0.3)
    asyncio.run(produce(broker.bootstrap, messages[half:]))

    env = worker_env(broker.bootstrap, redis_server.url, topics.env())
    out = backfill(env, "--from-time", cut.isoformat())
    assert out.returncode == 0, out.stderr
    n_later = len(messages) - half
    # Tansu answers ListOffsets by time right at batch boundaries only; either way the
    # same messages are folded.
    assert (f"done: {n_later:,} of {n_later:,} messages" in out.stderr
            or f"{half:,} older than --from-time skipped" in out.stderr), out.stderr
    later = [v for _, _, v in messages[half:]]
    assert_figures_match(report_json(env), expected(later, data.now))
    # From the time given with no offset: read in STREAM_TIMEZONE (UTC here); idempotent.
    again = backfill(env, "--from-time", cut.replace(tzinfo=None).isoformat())
    assert again.returncode == 0 and "done: 0 of 0 messages" in again.stderr, again.stderr

    # A broker without a real answer (Tansu inside a batch: offset 0, timestamp -1):
    # scanned from the beginning, older messages skipped by their Kafka timestamp. In a
    # store of its own (another key prefix in the same Redis).
    settings = Settings(kafka_brokers=broker.bootstrap, redis_url=redis_server.url,
                        topics=",".join(topics.inputs), dlq_topic=topics.dead_letter,
                        key_prefix="scan")  # type: ignore[arg-type]

    async def bogus(self: Any, timestamps: dict[TopicPartition, int]) -> dict[Any, Any]:
        return {tp: OffsetAndTimestamp(0, -1) for tp in timestamps}

    store = open_store(settings)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(AIOKafkaConsumer, "offsets_for_times", bogus)
            result = asyncio.run(run_backfill(settings, store, topics.inputs,
                                              from_time=cut))
        assert result.finished and result.skipped_by_time == half
        assert result.done == result.total == len(messages)
        assert_figures_match(read_figures(store, DayMapper(settings.timezone)),
                             expected(later, data.now))
    finally:
        store.close()


def test_backfill_refusals(broker: TansuBroker, redis_server: RedisServer,
                           topics: Topics) -> None:
    env = worker_env(broker.bootstrap, redis_server.url, topics.env())
    out = backfill(env, "--from-offset", "0", "--topic", "no-such-topic-" + topics.suffix)
    assert out.returncode == 2
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        f"engagement-stream: topic 'no-such-topic-{topics.suffix}' does not exist on the "
        "brokers"]
    # An empty topic: nothing to do; the store records its zone, and another zone is
    # then refused in one line.
    assert backfill(env, "--from-offset", "0").returncode == 0
    berlin = backfill({**env, "STREAM_TIMEZONE": "Europe/Berlin"}, "--from-offset", "0")
    assert berlin.returncode == 2 and berlin.stderr.count("\n") == 1
    assert "STREAM_TIMEZONE=UTC" in berlin.stderr


@pytest.mark.slow
def test_backfill_beside_a_live_worker(broker: TansuBroker, redis_server: RedisServer,
                                       topics: Topics) -> None:
    """A live worker and a backfill of the same topics into the same store at once: the
    offsets compared-and-set in Redis keep every figure exact (each side skips what the
    other applied)."""
    data = generate_stable(size=8000, seed=5)
    messages = topics.rename(data.messages)
    asyncio.run(produce(broker.bootstrap, messages))
    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_BATCH_MAX": "200"})
    with WorkerProcess(env) as worker:
        wait_until(lambda: worker.get("/readyz")[0] == 200, 60, "the live worker ready")
        out = backfill({**env, "STREAM_BATCH_MAX": "150"}, "--from-offset", "0")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: folded_total(report_json(env)) >= len(messages), 120,
                   "every message folded", interval=1.0)
        got = report_json(env)
        assert folded_total(got) == len(messages)
        assert_figures_match(got, expected(data.values(), data.now))
        assert worker.stop() == 0

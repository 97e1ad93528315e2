"""Rebalances: workers join, leave and crash while events keep arriving; nothing is lost
and nothing is folded twice.

The stream is produced in four chunks over Redis Cluster (16 hash-tag shards, so a crash
can leave a batch applied in some shards only). Between chunks the group changes while a
backlog is waiting: two workers join the first one, one of them leaves cleanly (SIGTERM),
the other is killed (SIGKILL, its partitions move after the session timeout and its
last batch is redelivered), and a fresh worker joins. At the end every count equals
the number of messages produced, every exact figure equals the oracle's, and every figure,
the unique counts included, equals that of one worker over one redis-server.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import pytest

from stream.demo.localservers import RedisCluster, RedisServer, TansuBroker
from tests.integration.test_cluster import (
    assert_exact_figures_match_oracle,
    assert_spread,
    figures_only,
)
from tests.support import oracle
from tests.support.dataset import generate_stable
from tests.support.kafka import Topics, consume_all, highwaters, produce
from tests.support.workers import WorkerProcess, folded_total, report_json, wait_until, worker_env


def _lag(worker: WorkerProcess) -> float | None:
    values = [v for (name, _), v in worker.metrics().items() if name == "engagement_consumer_lag"]
    return sum(values) if values else None


@pytest.mark.slow
def test_workers_joining_leaving_and_crashing_mid_stream(
        broker: TansuBroker, redis_cluster: RedisCluster, redis_server: RedisServer,
        topics: Topics) -> None:
    data = generate_stable(size=30_000, seed=21)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    chunks = [messages[i * len(messages) // 4:(i + 1) * len(messages) // 4] for i in range(4)]

    env = worker_env(broker.bootstrap, redis_cluster.url,
                     {**topics.env(), "STREAM_REDIS_CLUSTER": "true",
                      # small batches: a backlog lasts long enough to rebalance under it
                      "STREAM_BATCH_MAX": "100"})
    produced = 0
    backlog_at_change: list[int] = []
    workers: list[WorkerProcess] = []

    def add_chunk(i: int) -> None:
        nonlocal produced
        produced += asyncio.run(produce(broker.bootstrap, chunks[i]))

    def note_backlog() -> None:
        backlog_at_change.append(produced - folded_total(report_json(env)))

    def start() -> WorkerProcess:
        w = WorkerProcess(env).start()
        workers.append(w)
        return w

    try:
        first = start()
        add_chunk(0)
        wait_until(lambda: folded_total(report_json(env)) > 0, 60, "the first worker to start")
        # Two workers join while the first has a backlog.
        add_chunk(1)
        note_backlog()
        second, third = start(), start()
        try:
            wait_until(lambda: all(_lag(w) is not None for w in (second, third)), 90,
                       "the new workers' assignments")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{second.log()[-2000:]}\n{third.log()[-2000:]}"
                                 ) from None
        # One leaves cleanly, the other crashes, with more events waiting.
        add_chunk(2)
        note_backlog()
        assert second.stop() == 0, second.log()[-3000:]
        note_backlog()
        third.signal(signal.SIGKILL)
        third.wait(10)
        # A fresh worker joins; the rest of the stream arrives.
        fourth = start()
        add_chunk(3)
        note_backlog()
        assert produced == len(messages)
        wait_until(lambda: folded_total(report_json(env)) >= len(messages), 180,
                   "every message folded", interval=1.0)
        # Lag is reported for owned partitions only: none is left behind by a rebalance.
        wait_until(lambda: _lag(first) == 0 and _lag(fourth) == 0, 60, "lag 0")
        got = report_json(env)
        for w in (first, fourth):
            assert w.stop() == 0, w.log()[-3000:]
    finally:
        for w in workers:
            w.stop()
    # The membership changes happened with events waiting, not between quiet periods.
    assert sum(1 for b in backlog_at_change if b > 0) >= 2, backlog_at_change

    # Nothing lost, nothing doubled: the counters add up to exactly what was produced.
    logs = [w._log.name for w in workers]
    in_topics = sum(sum(asyncio.run(highwaters(broker.bootstrap, t)).values())
                    for t in topics.inputs)
    assert in_topics == len(messages), "the broker holds more than was produced"
    assert got["events_total"] == want["events_total"], logs
    assert got["dead_letter_total"] == data.expected_dead_letters, logs
    assert folded_total(got) == len(messages)
    assert_exact_figures_match_oracle(got, want)
    assert_spread(redis_cluster)

    # Every dead letter reached the topic (a crash may repeat one, never lose one).
    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter, timeout=30))
    bad = Counter(v for v in data.values() if oracle.check(v, data.now).reason is not None)
    assert not bad - Counter(m.value for m in dead)

    # The same figures, HyperLogLog estimates included, as one worker over one Redis.
    reference = _one_worker_on_one_redis(broker, redis_server, topics, len(messages))
    assert figures_only(got) == figures_only(reference)


def _one_worker_on_one_redis(broker: TansuBroker, redis_server: RedisServer, topics: Topics,
                             total: int) -> dict[str, Any]:
    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_CONSUMER_GROUP": topics.group + "-reference"})
    with WorkerProcess(env) as worker:
        wait_until(lambda: folded_total(report_json(env)) >= total, 120,
                   "the reference worker to fold every message", interval=1.0)
        figures = report_json(env)
        assert worker.stop() == 0
    return figures

"""Fault 3: Redis SIGKILLed mid-stream and restarted from an AOF that lacks its latest
writes, while Kafka's committed offsets are ahead of what Redis holds.

`appendonly yes` + `appendfsync everysec` loses up to a second of writes when the host
goes down (the un-fsynced tail of the AOF). SIGKILL alone loses nothing that was
written to the kernel, so the tests make the loss real: they copy the AOF directory at
one moment, let the worker apply more (and commit it to Kafka), then SIGKILL Redis and
restart it from the copy: Redis has lost its latest writes, and Kafka's committed
offsets are ahead of the offsets it holds.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    KafkaOffsetsWorker,
    aof_redis,
    applied_offsets,
    assert_exact,
    crash_and_restore,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    parts,
    produce_all,
    snapshot,
    wait_applied,
    wait_kafka_ahead,
    wait_lag_zero,
)
from tests.faults.scenarios import (
    RELOADING,
    RESUMING,
    complete_exactly,
    redis_lost_under_running_worker,
)
from tests.support.kafka import Topics
from tests.support.workers import WorkerProcess, wait_until

#: Seconds within which the native worker's Kafka commits pass the AOF copy's offsets
#: (it commits at most once a second).
COMMITS_WITHIN = 2.5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_restarted_from_older_aof_while_worker_runs(
        broker: TansuBroker, topics: Topics, tmp_path: Path) -> None:
    """The worker stays up: its next compare-and-set fails (Conflict), it clears its
    cache of (user, day) pairs, reloads the offsets from Redis and re-reads from them.
    On a loaded machine the rest of the input can reach the worker after its idle check
    of the offsets has begun waiting for Redis: that check then notices first (either
    way the worker re-reads from Redis's offsets; the Conflict reaction alone is
    `test_worker_paths.py`'s, the idle check alone the next test's)."""
    redis_lost_under_running_worker(broker, topics, tmp_path, seed=3,
                                    commits_within=COMMITS_WITHIN,
                                    caught_by=(RELOADING, RESUMING))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_restarted_from_older_aof_while_idle(
        broker: TansuBroker, topics: Topics, tmp_path: Path) -> None:
    """No new message arrives after the restart, so no compare-and-set can notice: the
    worker's idle check of the stored offsets does, and it re-reads what Redis lost."""
    truth = make_dataset(topics, 6_000, bulk_activity=20_000, seed=4, users=2000)
    a, b, c = parts(truth)
    with aof_redis() as redis, RedisServer() as ref:
        env = env_for(broker.bootstrap, redis.url, topics, truth)
        worker = WorkerProcess(env).start()
        with logged_workers(worker):
            produce_all(broker.bootstrap, a)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            snapshot(redis, tmp_path / "aof")
            before = applied_offsets(redis.url)
            produce_all(broker.bootstrap, b + c)
            highs = input_highwaters(broker.bootstrap, topics)
            wait_applied(redis.url, highs, 120)
            wait_kafka_ahead(broker.bootstrap, topics, before, COMMITS_WITHIN)
            crash_and_restore(redis, tmp_path / "aof")
            complete_exactly(broker.bootstrap, redis.url, topics, truth, [worker],
                             applied_within=60, ref=ref, dead_letters=False)
            assert "offsets in Redis are not those this worker applied" in worker.log()
            assert worker.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("offsets", ["redis", "kafka-only"])
def test_host_crash_worker_and_redis(broker: TansuBroker, topics: Topics, tmp_path: Path,
                                     offsets: str) -> None:
    """Worker and Redis both SIGKILLed (the host died), Redis restarted from an AOF that
    lacks its latest writes, the worker restarted: it resumes from the offsets in Redis
    and every figure is exact. The control (`kafka-only`) is a worker that resumes where
    Kafka's committed offsets say: the writes Redis lost are never re-applied, and the
    figures come out wrong, which shows that this test can fail."""
    truth = make_dataset(topics, 6_000, bulk_activity=20_000, seed=5, users=2000)
    a, b, c = parts(truth)
    kind = WorkerProcess if offsets == "redis" else KafkaOffsetsWorker
    with aof_redis() as redis, RedisServer() as ref:
        env = env_for(broker.bootstrap, redis.url, topics, truth)
        workers = [kind(env).start()]
        with logged_workers(workers):
            produce_all(broker.bootstrap, a)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            snapshot(redis, tmp_path / "aof")
            before = applied_offsets(redis.url)
            produce_all(broker.bootstrap, b)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            wait_kafka_ahead(broker.bootstrap, topics, before, COMMITS_WITHIN)
            workers[0].signal(signal.SIGKILL)
            workers[0].wait(10)
            crash_and_restore(redis, tmp_path / "aof")
            workers.append(kind(env).start())
            produce_all(broker.bootstrap, c)
            highs = input_highwaters(broker.bootstrap, topics)
            wait_until(lambda: all(applied_offsets(redis.url).get(s, -1) == h - 1
                                   for s, h in highs.items()), 120, "the last offsets")
            wait_lag_zero(workers[1:])
            if offsets == "redis":
                assert_exact(redis.url, truth, ref)
            else:
                with pytest.raises(AssertionError):
                    assert_exact(redis.url, truth, ref)
            assert workers[1].stop() == 0

"""Faults of the faust engine (`STREAM_ENGINE=faust`), as for the native worker
(test_crash.py, test_sigterm.py, test_redis_loss.py): faust workers SIGKILLed again and
again while they fold leave every figure exact; SIGTERM finishes the batch in flight and
exits 0; Redis restarted from an older AOF under a running faust worker (whose faust
commits are ahead) is caught by the compare-and-set and re-read from Redis's offsets,
past what faust had buffered."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    applied_offsets,
    assert_dead_letter_topic,
    assert_exact,
    env_for,
    input_highwaters,
    logs_on_failure,
    make_dataset,
    produce_all,
    wait_applied,
    wait_lag_zero,
)
from tests.faults.harness import committed_offsets as kafka_committed
from tests.faults.test_redis_loss import aof_redis, crash_and_restore, parts, snapshot
from tests.support.kafka import Topics, produce
from tests.support.workers import WorkerProcess, wait_until

pytest.importorskip("faust")

KILLS = 8


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_faust_workers_while_they_fold(broker: TansuBroker, redis_server: RedisServer,
                                               topics: Topics) -> None:
    truth = make_dataset(topics, 10_000, bulk_activity=60_000, seed=21)
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  STREAM_ENGINE="faust", STREAM_BATCH_MAX="1000")
    rng = random.Random(4321)
    chunks = [truth.messages[i:i + 5_000] for i in range(0, truth.total, 5_000)]
    produced = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for chunk in chunks:
                asyncio.run(produce(broker.bootstrap, chunk))
                time.sleep(1.0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            produced.set()

    workers = [WorkerProcess(env).start() for _ in range(2)]
    retired: list[WorkerProcess] = []
    feeder = threading.Thread(target=producer, daemon=True)
    try:
        feeder.start()
        # The first kill once some batches are in Redis: the workers are folding.
        wait_until(lambda: sum(applied_offsets(redis_server.url).values()) > 2_000, 90,
                   "the faust workers to fold")
        kills = 0
        while kills < KILLS or not produced.is_set():
            time.sleep(rng.uniform(1.0, 4.0))
            i = rng.randrange(len(workers))
            victim = workers[i]
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            retired.append(victim)
            workers[i] = WorkerProcess(env).start()
            kills += 1
        feeder.join(60)
        assert not errors, errors

        highs = input_highwaters(broker.bootstrap, topics)
        assert sum(highs.values()) == truth.total
        wait_applied(redis_server.url, highs, timeout=300)
        wait_lag_zero(workers, timeout=180)
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)
        assert_dead_letter_topic(broker.bootstrap, topics, truth)
        assert all(w.stop() == 0 for w in workers)
    except BaseException:
        print(logs_on_failure(workers + retired[-2:]))
        raise
    finally:
        for w in workers:
            w.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_a_faust_worker_cleanly(broker: TansuBroker, redis_server: RedisServer,
                                              topics: Topics) -> None:
    truth = make_dataset(topics, 5_000, bulk_activity=60_000, seed=22)
    produce_all(broker.bootstrap, truth.messages)
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  STREAM_ENGINE="faust", STREAM_BATCH_MAX="500")
    first = WorkerProcess(env).start()
    workers = [first]
    try:
        wait_until(lambda: sum(applied_offsets(redis_server.url).values()) > 5_000, 90,
                   "some progress")
        started = time.monotonic()
        first.signal(signal.SIGTERM)
        code = first.wait(15)
        took = time.monotonic() - started
        assert code == 0
        assert took < 10, took
        log = first.log()
        assert "stopping: finishing the batch in flight" in log
        assert "Traceback" not in log
        # It stopped before the end of the input: the rest is left for the next worker.
        highs = input_highwaters(broker.bootstrap, topics)
        stored = applied_offsets(redis_server.url)
        assert sum(stored.values()) < sum(highs.values()) - len(highs)

        second = WorkerProcess(env).start()
        workers.append(second)
        wait_applied(redis_server.url, highs, timeout=180)
        wait_lag_zero([second])
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)
        assert second.stop() == 0
    except BaseException:
        print(logs_on_failure(workers))
        raise
    finally:
        for w in workers:
            w.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_faust_worker_rereads_what_redis_lost(broker: TansuBroker, topics: Topics,
                                              tmp_path: Path) -> None:
    truth = make_dataset(topics, 10_000, bulk_activity=40_000, seed=23, users=3000)
    a, b, c = parts(truth)
    with aof_redis() as redis, RedisServer() as ref:
        env = env_for(broker.bootstrap, redis.url, topics, truth, STREAM_ENGINE="faust",
                      STREAM_BATCH_MAX="1000")
        worker = WorkerProcess(env).start()
        try:
            produce_all(broker.bootstrap, a)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            snapshot(redis, tmp_path / "aof")
            before = applied_offsets(redis.url)
            produce_all(broker.bootstrap, b)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)

            def kafka_ahead() -> bool:  # faust commits what it acked, on its own clock
                committed = kafka_committed(broker.bootstrap, topics.group, topics)
                return any(off > before.get(s, -1) + 1 for s, off in committed.items())
            wait_until(kafka_ahead, 30, "faust to commit past the AOF copy's offsets")
            redis.kill()
            # The rest arrives while Redis is down: faust buffers it while the worker
            # retries its batch, and Redis comes back with older offsets.
            produce_all(broker.bootstrap, c)
            time.sleep(2)
            crash_and_restore(redis, tmp_path / "aof")
            assert applied_offsets(redis.url) == before
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            wait_lag_zero([worker])
            assert_exact(redis.url, truth, ref)
            assert_dead_letter_topic(broker.bootstrap, topics, truth)
            # caught by a batch's compare-and-set, or by the idle check of the offsets
            # when no batch was pending: either way a seek backwards past faust's buffers
            log = worker.log()
            assert ("reloading offsets from Redis and re-reading" in log
                    or "resuming from Redis's" in log)
            assert worker.proc is not None and worker.proc.poll() is None
            assert worker.stop() == 0
        except BaseException:
            print(logs_on_failure([worker]))
            raise
        finally:
            worker.stop()

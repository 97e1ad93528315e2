"""Faults of the faust engine (`STREAM_ENGINE=faust`), as for the native worker
(test_crash.py, test_sigterm.py): faust workers SIGKILLed again and again while they fold
leave every figure exact; SIGTERM finishes the batch in flight and exits 0."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time

import pytest

from stream.localservers import RedisServer, TansuBroker
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

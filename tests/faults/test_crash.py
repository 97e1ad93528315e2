"""Fault 1: workers SIGKILLed at random moments while 200k+ events stream in.

Three workers share the partitions; a random one is killed (SIGKILL: no shutdown code
runs, the batch in flight is cut wherever it is) at least ten times while the input is
being produced, and restarted at once. Afterwards every figure must be exact, every
HyperLogLog equal to the reference, lag 0, and the dead letters exactly the bad input.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    assert_dead_letter_topic,
    assert_exact,
    env_for,
    input_highwaters,
    logs_on_failure,
    make_dataset,
    wait_applied,
    wait_lag_zero,
)
from tests.support.kafka import Topics, produce
from tests.support.workers import WorkerProcess

KILLS = 12


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_workers_at_random_moments(broker: TansuBroker, redis_server: RedisServer,
                                           topics: Topics) -> None:
    truth = make_dataset(topics, 20_000, bulk_activity=200_000, seed=11)
    assert truth.total >= 200_000
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  STREAM_BATCH_MAX="2000")
    rng = random.Random(1234)

    # Produce in chunks over ~30 s while the killing goes on.
    chunks = [truth.messages[i:i + 10_000] for i in range(0, truth.total, 10_000)]
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

    workers = [WorkerProcess(env).start() for _ in range(3)]
    retired: list[WorkerProcess] = []
    feeder = threading.Thread(target=producer, daemon=True)
    try:
        feeder.start()
        kills = 0
        while kills < KILLS or not produced.is_set():
            time.sleep(rng.uniform(0.5, 3.0))
            i = rng.randrange(len(workers))
            victim = workers[i]
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            retired.append(victim)
            workers[i] = WorkerProcess(env).start()
            kills += 1
        feeder.join(60)
        assert not errors, errors
        assert kills >= 10

        highs = input_highwaters(broker.bootstrap, topics)
        assert sum(highs.values()) == truth.total
        wait_applied(redis_server.url, highs, timeout=240)
        wait_lag_zero(workers)
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)
        assert_dead_letter_topic(broker.bootstrap, topics, truth)
        # SIGTERM to every worker at once, as an orchestrator stopping the deployment
        # does: stopped one by one, each would leave during the rebalance the previous
        # one started, and the embedded broker's joins (half the session timeout) can
        # then outlast STREAM_SHUTDOWN_SECONDS on a loaded machine.
        for w in workers:
            w.signal(signal.SIGTERM)
        assert all(w.wait(15) == 0 for w in workers)
    except BaseException:
        print(logs_on_failure(workers + retired[-3:]))
        raise
    finally:
        for w in workers:
            w.stop()

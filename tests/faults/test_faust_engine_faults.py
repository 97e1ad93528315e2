"""Faults of the faust engine (`STREAM_ENGINE=faust`), the scenarios of the native worker
(test_crash.py, test_sigterm.py, test_redis_loss.py, written once in scenarios.py) on a
faust worker: faust workers SIGKILLed again and again while they fold leave every figure
exact; SIGTERM finishes the batch in flight and exits 0; Redis restarted from an older
AOF under a running faust worker (whose faust commits are ahead) is caught by the
compare-and-set and re-read from Redis's offsets, past what faust had buffered."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    applied_offsets,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    produce_all,
)
from tests.faults.scenarios import (
    RELOADING,
    RESUMING,
    KillRun,
    complete_exactly,
    redis_lost_under_running_worker,
    sigkill_while_streaming,
    sigterm_cleanly,
)
from tests.support.kafka import Topics
from tests.support.workers import WorkerProcess, wait_until

pytest.importorskip("faust")

FAUST = {"STREAM_ENGINE": "faust"}

#: 70k events produced 5k a second to 2 faust workers, one SIGKILLed every 1-4 s once
#: they fold.
KILLS = KillRun(size=10_000, bulk_activity=60_000, seed=21, workers=2, kills=8, chunk=5_000,
                pause=(1.0, 4.0), rng_seed=4321, applied_within=300, lag_within=180,
                fold_before_kills=2_000, env={**FAUST, "STREAM_BATCH_MAX": "1000"})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_faust_workers_while_they_fold(broker: TansuBroker, redis_server: RedisServer,
                                               topics: Topics) -> None:
    sigkill_while_streaming(broker, redis_server.url, topics, KILLS)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_a_faust_worker_cleanly(broker: TansuBroker, redis_server: RedisServer,
                                              topics: Topics) -> None:
    truth = make_dataset(topics, 5_000, bulk_activity=60_000, seed=22)
    produce_all(broker.bootstrap, truth.messages)
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  **FAUST, STREAM_BATCH_MAX="500")
    first = WorkerProcess(env).start()
    workers = [first]
    with logged_workers(workers):
        wait_until(lambda: sum(applied_offsets(redis_server.url).values()) > 5_000, 90,
                   "some progress")
        sigterm_cleanly(first)
        # It stopped before the end of the input: the rest is left for the next worker.
        highs = input_highwaters(broker.bootstrap, topics)
        stored = applied_offsets(redis_server.url)
        assert sum(stored.values()) < sum(highs.values()) - len(highs)

        second = WorkerProcess(env).start()
        workers.append(second)
        complete_exactly(broker.bootstrap, redis_server.url, topics, truth, [second],
                         applied_within=180, dead_letters=False)
        assert second.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_faust_worker_rereads_what_redis_lost(broker: TansuBroker, topics: Topics,
                                              tmp_path: Path) -> None:
    # faust commits what it acked, on its own clock: up to 30 s for its commits to pass
    # the AOF copy's offsets. The loss is caught by a batch's compare-and-set, or by the
    # idle check of the offsets when no batch was pending: either way a seek backwards
    # past faust's buffers.
    redis_lost_under_running_worker(broker, topics, tmp_path, seed=23, commits_within=30,
                                    caught_by=(RELOADING, RESUMING), **FAUST,
                                    STREAM_BATCH_MAX="1000")

"""Faults 4 and 5: Redis unreachable for 30 s, the broker frozen for 30 s.

Redis is made unreachable by freezing it (SIGSTOP): connections stay open and nothing
answers, the worst case for a client (a refused connection fails fast). The broker is
frozen the same way (SIGSTOP/SIGCONT).
"""

from __future__ import annotations

import time

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    applied_offsets,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    produce_all,
    wait_applied,
    wait_lag_zero,
)
from tests.faults.scenarios import complete_exactly
from tests.support.kafka import PARTITIONS, Topics, unique_topics
from tests.support.workers import WorkerProcess, wait_until

OUTAGE = 30.0


def sample(worker: WorkerProcess, name: str) -> float | None:
    for (n, _), v in worker.metrics().items():
        if n == name:
            return v
    return None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_unreachable_for_30s(broker: TansuBroker, redis_server: RedisServer,
                                   topics: Topics) -> None:
    truth = make_dataset(topics, 8_000, bulk_activity=20_000, seed=6)
    half = truth.total // 2
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  STREAM_STALL_SECONDS="10")  # an outage must not count as a stall
    worker = WorkerProcess(env).start()
    with logged_workers(worker):
        produce_all(broker.bootstrap, truth.messages[:half])
        wait_applied(redis_server.url, input_highwaters(broker.bootstrap, topics), 120)
        wait_until(lambda: worker.get("/readyz")[0] == 200, 30, "ready")
        errors_before = sample(worker, "engagement_redis_errors_total") or 0
        pid = worker.proc.pid if worker.proc else None

        redis_server.pause()
        try:
            produce_all(broker.bootstrap, truth.messages[half:])
            end = time.monotonic() + OUTAGE
            seen_not_ready = seen_errors = False
            while time.monotonic() < end:
                code, _ = worker.get("/readyz")
                seen_not_ready |= code == 503
                errors = sample(worker, "engagement_redis_errors_total") or 0
                seen_errors |= errors > errors_before
                if seen_not_ready and seen_errors:
                    assert sample(worker, "engagement_worker_ready") == 0
                # Alive all along: liveness holds, same process, no crash loop.
                assert worker.get("/healthz")[0] == 200
                assert worker.proc is not None and worker.proc.poll() is None
                time.sleep(1.0)
            assert seen_not_ready, "/readyz never reported the outage"
            assert seen_errors, "engagement_redis_errors never grew"
        finally:
            redis_server.resume()
        # (Redis applies the batch the worker sent while it was stopped as soon as it
        # resumes, so its offsets are not compared with `before` here.)
        wait_applied(redis_server.url, input_highwaters(broker.bootstrap, topics), 120)
        wait_lag_zero([worker])
        wait_until(lambda: worker.get("/readyz")[0] == 200, 30, "ready again")
        assert sample(worker, "engagement_worker_ready") == 1
        assert worker.proc is not None and worker.proc.pid == pid
        complete_exactly(broker.bootstrap, redis_server.url, topics, truth, [worker],
                         applied_within=120)
        log = worker.log()
        assert "Redis unavailable" in log
        assert "Traceback" not in log
        assert worker.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_broker_frozen_for_30s(redis_server: RedisServer) -> None:
    with TansuBroker() as own:
        topics = unique_topics("frozen")
        own.create_topics(topics.all, PARTITIONS)
        truth = make_dataset(topics, 8_000, bulk_activity=30_000, seed=7)
        half = truth.total // 2
        env = env_for(own.bootstrap, redis_server.url, topics, truth, STREAM_BATCH_MAX="500")
        produce_all(own.bootstrap, truth.messages[:half])
        worker = WorkerProcess(env).start()
        with logged_workers(worker):
            # Freeze while the worker is mid-stream.
            wait_until(lambda: sum(applied_offsets(redis_server.url).values()) > 2000, 60,
                       "some progress")
            own.pause()
            try:
                end = time.monotonic() + OUTAGE
                while time.monotonic() < end:
                    assert worker.proc is not None and worker.proc.poll() is None
                    assert worker.get("/healthz")[0] == 200  # 30 s < STREAM_STALL_SECONDS
                    time.sleep(1.0)
            finally:
                own.resume()
            produce_all(own.bootstrap, truth.messages[half:])
            complete_exactly(own.bootstrap, redis_server.url, topics, truth, [worker],
                             applied_within=180)
            assert worker.stop() == 0

"""Fault 6: a stalled consumer (lag > 0 and no progress for `STREAM_STALL_SECONDS`)
fails the liveness probe, then exits non-zero (3) so the orchestrator restarts it, even
though the broker that stalls it also blocks a clean shutdown.

The stall is real: large messages fill the consumer's fetch buffer, then the broker is
frozen (SIGSTOP). The worker drains what it holds; the highwater it knows stays ahead.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    assert_exact,
    env_for,
    input_highwaters,
    logs_on_failure,
    noon_zone,
    produce_all,
    truth_of,
    wait_applied,
    wait_lag_zero,
)
from tests.support.kafka import unique_topics
from tests.support.workers import WorkerProcess, wait_until


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stalled_consumer_fails_liveness_then_exits_3(redis_server: RedisServer) -> None:
    now = datetime.now(UTC)
    ts = int(now.timestamp() * 1000) - 60_000
    with TansuBroker() as own:
        topics = unique_topics("stall")
        own.create_topics(topics.all, 1)
        blob = "x" * 200_000
        messages = [
            (topics.inputs[i % 4], f"u{i % 50}".encode(), json.dumps(
                {"event_id": f"big-{i}", "type": "activity", "user_id": f"u{i % 50}",
                 "ts": ts, "props": {"blob": blob}}).encode())
            for i in range(600)
        ]
        truth = truth_of(messages, now, noon_zone(now))
        produce_all(own.bootstrap, messages)
        env = env_for(own.bootstrap, redis_server.url, topics, truth, STREAM_BATCH_MAX="5",
                      STREAM_STALL_SECONDS="3", STREAM_SHUTDOWN_SECONDS="3")
        worker = WorkerProcess(env).start()
        workers = [worker]
        try:
            def lagging() -> bool:
                return any(n == "engagement_consumer_lag" and v > 0
                           for (n, _), v in worker.metrics().items())
            wait_until(lagging, 60, "lag > 0", interval=0.1)
            own.pause()
            try:
                started = time.monotonic()
                wait_until(lambda: worker.get("/healthz")[0] == 503, 30,
                           "liveness to fail", interval=0.2)
                assert worker.get("/healthz")[1] == "stalled\n"
                code = worker.wait(30)
                took = time.monotonic() - started
            finally:
                own.resume()
            assert code == 3, code
            assert took < 25, took
            assert "stalled" in worker.log()

            # The orchestrator restarts it; it catches up and nothing is lost.
            workers.append(WorkerProcess(env).start())
            wait_applied(redis_server.url, input_highwaters(own.bootstrap, topics), 120)
            wait_lag_zero(workers[1:])
            with RedisServer() as ref:
                assert_exact(redis_server.url, truth, ref)
            assert workers[1].stop() == 0
        except BaseException:
            print(logs_on_failure(workers))
            raise
        finally:
            for w in workers:
                w.stop()
            if own.paused:
                own.resume()

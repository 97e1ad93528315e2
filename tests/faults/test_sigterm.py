"""Fault 2: SIGTERM mid-stream. The worker finishes the batch in flight, commits, leaves
the consumer group and exits 0 within 10 s; a restarted worker then completes the input
with every figure exact."""

from __future__ import annotations

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    applied_offsets,
    committed_offsets,
    env_for,
    logged_workers,
    make_dataset,
    produce_all,
)
from tests.faults.scenarios import complete_exactly, sigterm_cleanly
from tests.support.kafka import Topics
from tests.support.workers import WorkerProcess, wait_until


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_finishes_batch_commits_leaves_and_exits_0(
        broker: TansuBroker, redis_server: RedisServer, topics: Topics) -> None:
    truth = make_dataset(topics, 10_000, bulk_activity=60_000, seed=2)
    produce_all(broker.bootstrap, truth.messages)
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  STREAM_BATCH_MAX="500")
    first = WorkerProcess(env).start()
    other = WorkerProcess(env).start()
    workers = [first, other]
    with logged_workers(workers):
        def both_assigned() -> bool:
            return all(any(n == "engagement_consumer_lag" for n, _ in w.metrics())
                       for w in workers)
        wait_until(both_assigned, 60, "both workers to get partitions")
        wait_until(lambda: sum(applied_offsets(redis_server.url).values()) > 5_000, 60,
                   "some progress")
        mine = {f"{dict(labels)['topic']}/{dict(labels)['partition']}"
                for n, labels in first.metrics() if n == "engagement_consumer_lag"}
        sigterm_cleanly(first)
        # It committed what it applied: for each of its partitions, Kafka's committed
        # offset is the one after the last offset Redis holds (read at once: the
        # survivor only gets them at the next join, seconds later).
        stored = applied_offsets(redis_server.url)
        committed = committed_offsets(broker.bootstrap, topics.group, topics)
        assert mine
        assert {s: committed.get(s) for s in mine} == {
            s: stored.get(s, -1) + 1 for s in mine}

        # The survivor takes over every partition. (aiokafka sends LeaveGroup on close
        # when its generation is above 0; the test broker numbers generations from 0
        # and describes groups loosely, so the leave itself is not asserted here.)
        def survivor_has_all() -> bool:
            return sum(1 for n, _ in other.metrics() if n == "engagement_consumer_lag") == 16
        wait_until(survivor_has_all, 60, "the survivor to take every partition",
                   interval=0.2)

        complete_exactly(broker.bootstrap, redis_server.url, topics, truth, [other],
                         applied_within=120, dead_letters=False)
        assert other.stop() == 0

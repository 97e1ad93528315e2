"""The faust engine end to end (`STREAM_ENGINE=faust`): a real Tansu broker, real
redis-servers, the real command.

The same generated dataset (every event type, duplicates, reordering, bad input) is folded
by a faust-engine worker into one Redis and by the native worker into another: every
figure of the faust engine's `report --json` equals the brute-force oracle's (unique
counts within 3%) and the native engine's (exactly: the same members make the same
HyperLogLogs), `/metrics` agrees, the dead-letter topic holds exactly the bad input, and
a second faust worker in a fresh consumer group resumes from Redis's offsets.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from stream.catalogue import SCAN_FIGURES
from stream.demo.localservers import RedisServer, TansuBroker
from tests.integration.test_worker_e2e import assert_figures_match, metrics_as_report
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.kafka import Topics, consume_all, highwaters, produce
from tests.support.workers import (
    WorkerProcess,
    folded_total,
    report_json,
    wait_until,
    worker_env,
)

pytest.importorskip("faust")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_faust_engine_equals_oracle_and_native(broker: TansuBroker, redis_server: RedisServer,
                                               topics: Topics) -> None:
    data = ds.generate_stable(size=12_000)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    want.update(oracle.previous_day_figures(data.values(), data.now))
    asyncio.run(produce(broker.bootstrap, messages))

    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_ENGINE": "faust"})
    with WorkerProcess(env) as worker:
        try:
            wait_until(lambda: folded_total(report_json(env)) >= len(messages), 180,
                       "the faust worker to fold every message", interval=1.0)
            got = report_json(env)
            assert folded_total(got) == len(messages)
            assert_figures_match(got, want)
            assert got["dead_letter_total"] == data.expected_dead_letters
            assert_figures_match(metrics_as_report(worker), got)
            wait_until(lambda: any(n == "engagement_consumer_lag" for (n, _) in
                                   worker.metrics()), 30, "lag reported")
            wait_until(lambda: all(v == 0 for (n, _), v in worker.metrics().items()
                                   if n == "engagement_consumer_lag"), 30, "lag 0")
            assert worker.get("/readyz")[0] == 200
            assert worker.get("/healthz")[0] == 200
            assert worker.stop() == 0
            assert "Traceback" not in worker.log()
        except BaseException:
            print(worker.log()[-6000:])
            raise

    # The native engine on the same input, into its own Redis: the same figures.
    with RedisServer() as native_redis:
        native_env = worker_env(broker.bootstrap, native_redis.url,
                                {**topics.env(), "STREAM_CONSUMER_GROUP": topics.group + "-n",
                                 "STREAM_DLQ_TOPIC": topics.dead_letter + "-n"})
        with WorkerProcess(native_env):
            wait_until(lambda: folded_total(report_json(native_env)) >= len(messages), 180,
                       "the native worker to fold every message", interval=1.0)
            native = report_json(native_env)
        # the user scan's figures are as of each worker's own scan
        assert ({k: v for k, v in native.items() if k not in SCAN_FIGURES}
                == {k: v for k, v in got.items() if k not in SCAN_FIGURES})

    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter,
                                   n=sum(data.expected_dead_letters.values()), timeout=30))
    assert Counter(m.header("error") for m in dead) == +Counter(data.expected_dead_letters)
    bad_values = Counter(v for v in data.values() if oracle.check(v, data.now).reason)
    assert Counter(m.value for m in dead) == bad_values

    # A second faust worker in a new group (no Kafka offsets) resumes from Redis's.
    env2 = {**env, "STREAM_CONSUMER_GROUP": topics.group + "-second"}
    with WorkerProcess(env2) as second:
        wait_until(lambda: any(n == "engagement_consumer_lag" for (n, _) in
                               second.metrics()), 60, "the second worker's assignment")
        wait_until(lambda: all(v == 0 for (n, _), v in second.metrics().items()
                               if n == "engagement_consumer_lag"), 60, "second worker lag 0")
        assert report_json(env2) == got


async def _commit_to_end(bootstrap: str, group: str, topics: Topics) -> dict[str, int]:
    """Commit the group's Kafka offsets at every input partition's end, as faust does for
    events it acked (acked even when the agent that took them raised)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ends: dict[TopicPartition, int] = {}
    for topic in topics.inputs:
        for p, high in (await highwaters(bootstrap, topic)).items():
            ends[TopicPartition(topic, p)] = high
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.commit({tp: off for tp, off in ends.items()})
        return {f"{tp.topic}/{tp.partition}": await consumer.committed(tp) for tp in ends}
    finally:
        await consumer.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_offsets_win_over_faust_commits(broker: TansuBroker, redis_server: RedisServer,
                                              topics: Topics) -> None:
    """Kafka's committed offsets at the end of every partition and an empty Redis: the
    faust engine reads every partition from Redis's offsets (none: the start), not from
    where faust's own commits say."""
    data = ds.generate_stable(size=3_000, seed=5)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    asyncio.run(produce(broker.bootstrap, messages))
    committed = asyncio.run(_commit_to_end(broker.bootstrap, topics.group, topics))
    assert sum(committed.values()) == len(messages)

    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_ENGINE": "faust"})
    with WorkerProcess(env) as worker:
        try:
            wait_until(lambda: folded_total(report_json(env)) >= len(messages), 120,
                       "the faust worker to fold every message", interval=1.0)
            got = report_json(env)
            assert folded_total(got) == len(messages)
            got.update({k: v for k, v in want.items() if k.startswith("previous_day_")})
            assert_figures_match({k: v for k, v in got.items() if k in want}, want)
        except BaseException:
            print(worker.log()[-6000:])
            raise

"""The worker end to end: a real Tansu broker, a real redis-server, the real command.

A generated multi-week dataset (every event type, duplicates with the same and with
different content, cross-topic reordering, each kind of bad input) is produced; a worker
folds it; every figure of `report --json` must equal the brute-force oracle's (unique
counts within 3%), `/metrics` must agree with `report --json`, the dead-letter topic must
hold exactly the bad input with the right `error` headers and the original bytes, and a
second worker in a fresh consumer group must resume from Redis's offsets and change
nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from stream.catalogue import SCAN_FIGURES
from stream.demo.localservers import RedisServer, TansuBroker
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.kafka import Topics, consume_all, produce
from tests.support.workers import (
    PURE_PATH_LINE,
    WorkerProcess,
    folded_total,
    path_env,
    report_json,
    wait_until,
    worker_env,
)


def assert_figures_match(got: dict[str, Any], want: dict[str, Any]) -> None:
    # the user scan's figures are as of the scan, which may be older than the data
    got = {k: v for k, v in got.items() if k not in SCAN_FIGURES}
    want = {k: v for k, v in want.items() if k not in SCAN_FIGURES}
    assert set(got) == set(want), set(got) ^ set(want)
    for name, value in want.items():
        if name in oracle.UNIQUE_WITH_PREVIOUS_DAY:
            assert got[name] == pytest.approx(value, rel=0.03), name
        elif isinstance(value, float):
            assert got[name] == pytest.approx(value, abs=1e-9), name
        elif isinstance(value, dict):
            assert set(got[name]) == set(value), (name, got[name], value)
            for k, v in value.items():
                assert got[name][k] == pytest.approx(v, abs=1e-9), (name, k)
        else:
            assert got[name] == value, name


def metrics_as_report(worker: WorkerProcess) -> dict[str, Any]:
    """The contract's metrics read back from /metrics, shaped like `report --json`."""
    out: dict[str, Any] = {"conversion_ratio": {}, "previous_day_conversion_ratio": {},
                           "events_total": {}, "dead_letter_total": {},
                           "late_events_total": {}, "ignored_total": {}}
    out |= {name: {} for name in DAY_LABELLED}
    for (name, labels), value in worker.metrics().items():
        if not name.startswith("engagement_"):
            continue
        short = name.removeprefix("engagement_")
        lab = dict(labels)
        if short in ("conversion_ratio", "previous_day_conversion_ratio"):
            out[short][lab["campaign"]] = value
        elif short == "events_total":
            out["events_total"][lab["type"]] = int(value)
        elif short == "dead_letter_total":
            out["dead_letter_total"][lab["reason"]] = int(value)
        elif short == "late_events_total":
            out[short][lab["age"]] = int(value)
        elif short in DAY_LABELLED:
            out[short][lab["day"]] = int(value) if short.endswith("_users") else value
        elif short == "ignored_total":
            out["ignored_total"][lab["reason"]] = int(value)
        elif not lab and short in oracle_keys:
            out[short] = value
    return out


DAY_LABELLED = ("cohort_retention_ratio", "cohort_users", "previous_day_cohort_retention_ratio",
                "previous_day_cohort_users")
oracle_keys = {"daily_active_users", "weekly_active_users", "monthly_active_users",
               "calendar_month_active_users", "stickiness_ratio",
               "previous_day_stickiness_ratio", "customers", "churn_ratio", "retention_ratio",
               "nps_score", "csat_ratio", "first_week_active_ratio"}
oracle_keys |= {"previous_day_" + name for name in oracle.PREVIOUS_DAY_FIGURES}
oracle_keys |= {"users_forgotten_total"}


@pytest.mark.slow
@pytest.mark.parametrize(("client", "path"), [("aiokafka", "compiled"),
                                              ("confluent", "compiled"),
                                              ("aiokafka", "pure")])
def test_dataset_end_to_end(broker: TansuBroker, redis_server: RedisServer,
                            topics: Topics, client: str, path: str) -> None:
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    data = ds.generate_stable(size=20_000)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    want.update(oracle.previous_day_figures(data.values(), data.now))
    assert sum(want["dead_letter_total"].values()) == sum(data.expected_dead_letters.values())

    asyncio.run(produce(broker.bootstrap, messages))
    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_KAFKA_CLIENT": client, **path_env(path)})
    with WorkerProcess(env) as worker:
        wait_until(lambda: folded_total(report_json(env)) >= len(messages), 120,
                   "the worker to fold every message", interval=1.0)
        got = report_json(env)
        assert folded_total(got) == len(messages)
        assert_figures_match(got, want)
        assert got["dead_letter_total"] == data.expected_dead_letters

        # /metrics says the same as report --json (counts exported as floats).
        assert_figures_match(metrics_as_report(worker), got)

        # Health: caught up, ready, alive.
        wait_until(lambda: all(v == 0 for (n, _), v in worker.metrics().items()
                               if n == "engagement_consumer_lag"), 30, "lag 0")
        assert worker.get("/readyz")[0] == 200
        assert worker.get("/healthz")[0] == 200
        assert worker.stop() == 0
        assert (PURE_PATH_LINE in worker.log()) is (path == "pure")

    # The dead-letter topic: exactly the bad input, original bytes, reason in `error`.
    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter,
                                   n=sum(data.expected_dead_letters.values()), timeout=30))
    assert Counter(m.header("error") for m in dead) == +Counter(data.expected_dead_letters)
    assert all(m.header("error_detail") for m in dead)
    checked = [(v, oracle.check(v, data.now).reason) for v in data.values()]
    bad_values = Counter(v for v, reason in checked if reason is not None)
    assert Counter(m.value for m in dead) == bad_values

    # A second worker in a new consumer group (Kafka offsets: none) resumes from the
    # offsets in Redis: nothing is folded twice.
    env2 = {**env, "STREAM_CONSUMER_GROUP": topics.group + "-second"}
    with WorkerProcess(env2) as second:
        wait_until(lambda: any(n == "engagement_consumer_lag" for (n, _) in
                               second.metrics()), 60, "the second worker's assignment")
        wait_until(lambda: all(v == 0 for (n, _), v in second.metrics().items()
                               if n == "engagement_consumer_lag"), 60, "second worker lag 0")
        assert report_json(env2) == got

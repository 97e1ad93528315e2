"""Every dashboard query and every recording rule, against a real Prometheus scraping a
real worker.

A real ``prometheus`` (the distribution's package) scrapes a real ``python -m stream
worker`` every second and loads the shipped rule files. The worker folds a generated
dataset (every event type, every kind of bad input) in two waves, so that every counter
has grown inside the 5-minute ``rate()`` windows. Then every panel query of the Grafana
dashboard and every recording rule expression is evaluated through Prometheus' HTTP API:
each must return at least one sample, and no sample may be NaN. Every rule (alerts
included) must be loaded and evaluated without error, and every alert expression must be
accepted by the query API.

The one liberty taken with the shipped rule files: the ``interval`` of the baseline
group is dropped (so it is evaluated every second like the others). Prometheus delays a
group's first evaluation by up to one interval, which would only make the test slower;
the expressions are the shipped ones, byte for byte.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEPLOY, load_module

from stream.demo.localservers import PrometheusServer, RedisServer, TansuBroker
from tests.support import dataset as ds
from tests.support.kafka import Topics, produce
from tests.support.workers import WorkerProcess, wait_until, worker_env

RULES_DIR = DEPLOY / "prometheus" / "rules"
queries = load_module("deploy/queries.py")


def _without_group_intervals(target: Path) -> list[Path]:
    """Copies of the shipped rule files whose groups use the global evaluation interval."""
    out = []
    for path in sorted(RULES_DIR.glob("*.rules.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)
        copy = target / path.name
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(copy)
    return out


@pytest.fixture
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    # Not a skip: CI must run this (scripts/install.sh installs the Debian package).
    assert path, "prometheus not found on PATH: install the Debian 'prometheus' package"
    return path


@pytest.fixture
def worker(
    broker: TansuBroker, redis_server: RedisServer, topics: Topics
) -> Iterator[WorkerProcess]:
    # With segments, so that the segment families' panels have series too.
    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_SEGMENTS": "plan,platform"})
    with WorkerProcess(env) as w:
        yield w


def _value(prom: PrometheusServer, expr: str) -> float:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def _folded(prom: PrometheusServer) -> float:
    """Messages the worker has accounted for, as Prometheus last scraped them."""
    return _value(
        prom,
        "sum(engagement_events_total) + sum(engagement_dead_letter_total)"
        " or sum(engagement_events_total)",
    )


def _empty_or_nan(prom: PrometheusServer, expr: str) -> str | None:
    """Why `expr` does not count as returning data (None when it does)."""
    try:
        result = prom.query(expr)
    except Exception as exc:  # a query error is a failure too
        return f"error: {exc}"
    if not result:
        return "no data"
    nan = [r["metric"] for r in result if math.isnan(float(r["value"][1]))]
    if nan:
        return f"NaN for {nan}"
    return None


@pytest.mark.slow
def test_every_dashboard_query_and_recording_rule_returns_data(
    prometheus_bin: str, broker: TansuBroker, topics: Topics, worker: WorkerProcess, tmp_path: Path
) -> None:
    data = ds.generate(datetime.now(UTC), size=4000, seed=7)
    messages = topics.rename(data.messages)
    # Every reason of dead letter is in the dataset, so every labelled series exists.
    assert all(data.expected_dead_letters[r] > 0 for r in ds.REASONS)
    first, second = messages[: len(messages) // 2], messages[len(messages) // 2 :]

    with PrometheusServer(
        executable=prometheus_bin,
        scrape_targets=[f"127.0.0.1:{worker.port}"],
        rule_files=_without_group_intervals(tmp_path),
        scrape_interval=1,
    ) as prom:
        # Wave one, then (after Prometheus has seen it) wave two: every counter grows
        # between two scrapes inside the rate() windows.
        asyncio.run(produce(broker.bootstrap, first))
        wait_until(
            lambda: _folded(prom) >= len(first),
            90,
            "Prometheus to see the first wave folded",
            interval=1.0,
        )
        time.sleep(3)
        asyncio.run(produce(broker.bootstrap, second))
        wait_until(
            lambda: _folded(prom) >= len(messages),
            60,
            "Prometheus to see every message folded",
            interval=1.0,
        )
        assert _folded(prom) == len(messages), worker.log()[-3000:]

        checked = queries.dashboard_queries() + [
            q for q in queries.rule_expressions() if q.source == "recording"
        ]
        assert len(checked) > 40
        # A few rule evaluations after the last scrape; recorded series that depend on
        # other recorded series need one more round each.
        failures: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while True:
            failures = {}
            for q in checked:
                why = _empty_or_nan(prom, q.promql())
                if why:
                    failures[f"{q.source} {q.name}: {q.promql()}"] = why
            if not failures or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not failures, "\n".join(f"{k} -> {v}" for k, v in failures.items())

        # The recorded series exist under their own names too (what the panels read).
        for q in queries.rule_expressions():
            if q.source == "recording":
                assert prom.query(q.name), f"recorded series {q.name} is missing"

        # Every alert expression is valid PromQL that Prometheus accepts.
        for q in queries.rule_expressions():
            if q.source == "alert":
                prom.query(q.promql())

        # Every rule of every shipped group is loaded and evaluated without error.
        rules = _rules_api(prom)
        shipped = {
            g["name"]
            for path in RULES_DIR.glob("*.rules.yml")
            for g in yaml.safe_load(path.read_text())["groups"]
        }
        assert {g["name"] for g in rules} == shipped
        bad = [
            (r["name"], r.get("lastError"))
            for g in rules
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        assert not bad, bad
        # The pipeline is healthy, so these alerts must not be pending or firing.
        states = {
            r["name"]: r["state"] for g in rules for r in g["rules"] if r["type"] == "alerting"
        }
        for name in (
            "EngagementExporterDown",
            "EngagementRedisErrors",
            "EngagementNoEventsFolded",
            "EngagementConsumerLagGrowing",
        ):
            assert states[name] == "inactive", (name, states[name])


def _rules_api(prom: PrometheusServer) -> list[dict[str, Any]]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["groups"]  # type: ignore[no-any-return]

"""The embedding API: `stream.engines.faust.install(app, settings)` adds the engagement
worker to a faust App a team already has, with an agent of its own, run by faust's own
command line (`app.main()`, `worker`). Both agents get every message of their topics, the
figures equal the brute-force oracle's, `/metrics` is served, and SIGTERM stops the App
and the worker cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.integration.test_worker_e2e import assert_figures_match, metrics_as_report
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.kafka import Topics, produce
from tests.support.workers import ROOT, WorkerProcess, folded_total, report_json, wait_until
from tests.support.workers import worker_env as _worker_env

pytest.importorskip("faust")

#: A team's faust App: an agent of its own that writes each order it gets to a file,
#: and the engagement worker added by the one call. Settings come from STREAM_*.
TEAM_APP = """
import os, sys
import faust
from stream.engines.faust import install
from stream.settings import load

app = faust.App(os.environ["TEAM_APP_ID"], broker="kafka://" + os.environ["STREAM_KAFKA_BROKERS"],
                store="memory://", web_enabled=False, topic_disable_leader=True,
                consumer_auto_offset_reset="earliest", broker_session_timeout=6.0,
                broker_heartbeat_interval=1.0, datadir=os.environ["TEAM_DATADIR"])
orders = app.topic(os.environ["TEAM_TOPIC"], value_serializer="raw")
out = open(os.environ["TEAM_OUT"], "ab", buffering=0)


@app.agent(orders)
async def count_orders(stream):
    async for value in stream:
        out.write(value + b"\\n")


install(app, load())
sys.argv = [sys.argv[0], "worker", "--loglevel", os.environ.get("TEAM_LOGLEVEL", "warn"),
            "--without-web"]
app.main()
"""


class TeamApp(WorkerProcess):
    def start(self) -> TeamApp:
        self.proc = subprocess.Popen([sys.executable, "-c", TEAM_APP], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_install_adds_the_worker_to_a_team_app(broker: TansuBroker, redis_server: RedisServer,
                                               topics: Topics, tmp_path: Path) -> None:
    data = ds.generate_stable(size=6_000)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    want.update(oracle.previous_day_figures(data.values(), data.now))
    team_topic = f"orders.{topics.suffix}"
    broker.create_topics([team_topic], 2)
    orders = [(team_topic, None, f"order-{i}".encode()) for i in range(500)]
    asyncio.run(produce(broker.bootstrap, messages + orders))

    out = tmp_path / "orders.txt"
    env = _worker_env(broker.bootstrap, redis_server.url, {
        **topics.env(), "TEAM_APP_ID": f"team-{topics.suffix}", "TEAM_TOPIC": team_topic,
        "TEAM_OUT": str(out), "TEAM_DATADIR": str(tmp_path / "data")})
    app = TeamApp(env)
    with app:
        try:
            def folded() -> bool:
                assert app.proc is not None and app.proc.poll() is None, "the App exited"
                return folded_total(report_json(env)) >= len(messages)
            wait_until(folded, 180, "the embedded worker to fold every message", interval=1.0)
            got = report_json(env)
            assert folded_total(got) == len(messages)
            assert_figures_match(got, want)
            assert got["dead_letter_total"] == data.expected_dead_letters
            assert_figures_match(metrics_as_report(app), got)
            assert app.get("/readyz")[0] == 200
            wait_until(lambda: out.exists() and len(out.read_bytes().split()) >= 500, 60,
                       "the team's own agent to get every order")
            assert sorted(out.read_bytes().split()) == sorted(v for _, _, v in orders)

            app.signal(signal.SIGTERM)
            assert app.wait(20) == 0
            assert app.get("/metrics")[0] == 0  # the endpoint stopped with the App
            assert "Traceback" not in app.log()
        except BaseException:
            print(app.log()[-6000:])
            raise


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_team_app_runs_while_redis_is_not_up_yet(broker: TansuBroker, topics: Topics,
                                                 tmp_path: Path) -> None:
    """Redis unreachable when the App starts: the App's own agent works meanwhile (the
    engagement worker, waiting for Redis, holds up no rebalance), and once Redis is up the
    worker takes the App's assignment and folds everything exactly."""
    data = ds.generate_stable(size=3_000, seed=9)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    team_topic = f"orders.{topics.suffix}"
    broker.create_topics([team_topic], 2)
    orders = [(team_topic, None, f"order-{i}".encode()) for i in range(200)]
    asyncio.run(produce(broker.bootstrap, messages + orders))

    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    out = tmp_path / "orders.txt"
    env = _worker_env(broker.bootstrap, redis_url, {
        **topics.env(), "TEAM_APP_ID": f"team-{topics.suffix}", "TEAM_TOPIC": team_topic,
        "TEAM_OUT": str(out), "TEAM_DATADIR": str(tmp_path / "data"), "TEAM_LOGLEVEL": "info"})
    app = TeamApp(env)
    with app:
        try:
            wait_until(lambda: out.exists() and len(out.read_bytes().split()) >= 200, 90,
                       "the team's own agent to get every order without Redis")
            with RedisServer(port=port):
                wait_until(lambda: folded_total(report_json(env)) >= len(messages), 180,
                           "the worker to fold every message once Redis is up",
                           interval=1.0)
                got = report_json(env)
                assert folded_total(got) == len(messages)
                assert_figures_match({k: v for k, v in got.items() if k in want}, want)
                assert "taking the App's assignment at start" in app.log()
                app.signal(signal.SIGTERM)
                assert app.wait(20) == 0
        except BaseException:
            print(app.log()[-6000:])
            raise

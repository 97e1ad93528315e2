"""docs/quickstart.md works as written: on fresh servers `doctor` passes, and the test
event of its one-liner (run by bash exactly as the document spells it, with this
interpreter for `.venv/bin/python`) shows up in `report --json` and on /metrics, and its
bad message in the dead-letter count. (Its kcat line is not run: the Debian kcat's
librdkafka 2.0 cannot talk to the embedded broker.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.support.workers import ROOT, WorkerProcess, report_json, wait_until, worker_env

QUICKSTART = ROOT / "docs" / "quickstart.md"
TOPICS = ["engagement.activity", "engagement.conversions", "engagement.cancellations",
          "engagement.surveys", "engagement.dead-letter"]


def command(pattern: str) -> str:
    """The one shell line of the quickstart that matches `pattern`."""
    (line,) = [ln for ln in QUICKSTART.read_text().splitlines()
               if re.search(pattern, ln) and not ln.startswith(("`", "(", "A ", "#"))]
    return line


@pytest.fixture
def servers() -> Iterator[tuple[TansuBroker, RedisServer]]:
    """A broker of its own (the quickstart uses the default topic names) and a Redis
    set up as the quickstart asks (append-only file on)."""
    with TansuBroker() as broker, RedisServer(appendonly=True) as redis_server:
        broker.create_topics(TOPICS, 2)
        yield broker, redis_server


@pytest.mark.slow
def test_the_quickstart_event_shows_in_report_and_metrics(
        servers: tuple[TansuBroker, RedisServer], tmp_path: Path) -> None:
    broker, redis_server = servers
    env = worker_env(broker.bootstrap, redis_server.url,
                     {"STREAM_CONSUMER_GROUP": f"quickstart-{tmp_path.name}",
                      "STREAM_METRICS_PORT": str(free_port())})
    doctor = subprocess.run([sys.executable, "-m", "stream", "doctor"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    with WorkerProcess(env) as worker:
        wait_until(lambda: worker.get("/readyz")[0] == 200, 60, "the worker to be ready")
        python = shlex.quote(sys.executable)
        send = command(r"^\.venv/bin/python -m stream send").replace(".venv/bin/python", python)
        subprocess.run(["bash", "-euc", send], env=env, check=True, timeout=30, cwd=ROOT)
        wait_until(lambda: report_json(env).get("daily_active_users") == 1, 30,
                   "the test event in report --json")
        figures = report_json(env)
        assert figures["events_total"]["activity"] == 1
        assert sum(figures["events_total"].values()) == 1
        wait_until(lambda: worker.metrics().get(("engagement_daily_active_users", ())) == 1,
                   30, "the test event on /metrics")
        assert worker.metrics()[("engagement_events_total", (("type", "activity"),))] == 1
        # And the dead-letter example.
        bad = re.search(r"`(\.venv/bin/python -m stream send 'not json')`",
                        " ".join(QUICKSTART.read_text().split()))
        assert bad, "the quickstart's dead-letter example is gone"
        subprocess.run(["bash", "-euc", bad.group(1).replace(".venv/bin/python", python)],
                       env=env, check=True, timeout=30, cwd=ROOT)
        key = ("engagement_dead_letter_total", (("reason", "invalid_json"),))
        wait_until(lambda: worker.metrics().get(key) == 1, 30, "the bad message counted")

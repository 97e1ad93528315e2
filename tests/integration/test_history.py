"""History through the command line: `report --day` against the oracle run as of that
day's end, the `previous_day_*` family in `report --json`, and the one-line refusals
(a day not kept, a day after today, a store of another STREAM_TIMEZONE, a worker started
with another zone on an existing store)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.direct import fold_messages, fresh_store
from tests.support.kafka import Topics
from tests.support.workers import ROOT, worker_env

ZONE = "America/New_York"


@pytest.fixture(scope="module")
def filled() -> Iterator[tuple[str, ds.Dataset]]:
    """A redis-server holding a generated dataset folded with the real clock in ZONE."""
    with RedisServer() as server:
        now = datetime.now(UTC)
        data = ds.generate(now, size=4000, seed=7, timezone=ZONE)
        if not data.is_stable_at(now + timedelta(minutes=3)):
            pytest.skip("too close to local midnight for stable figures")
        store = fresh_store(server.url, ZONE, buckets=64)
        fold_messages(store, data.messages, data.now, ZONE)
        store.close()
        yield server.url, data


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def cli_env(url: str, zone: str = ZONE, **extra: str) -> dict[str, str]:
    return worker_env("127.0.0.1:9", url, {"STREAM_TIMEZONE": zone,
                                           "STREAM_USER_BUCKETS": "64", **extra})


def assert_matches(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    assert set(got) == set(want), (what, set(got) ^ set(want))
    for name, value in want.items():
        if name in oracle.UNIQUE_WITH_PREVIOUS_DAY:
            assert got[name] == pytest.approx(value, rel=0.03), (what, name)
        elif isinstance(value, dict):
            assert set(got[name]) == set(value), (what, name)
            for k, v in value.items():
                assert got[name][k] == pytest.approx(v, abs=1e-9), (what, name, k)
        elif isinstance(value, float):
            assert got[name] == pytest.approx(value, abs=1e-9), (what, name)
        else:
            assert got[name] == value, (what, name)


def test_report_day_matches_oracle(filled: tuple[str, ds.Dataset]) -> None:
    url, data = filled
    values = data.values()
    today = data.now.astimezone(ZoneInfo(ZONE)).date()
    env = cli_env(url)
    # first week included: a past day's is computed from the bitmaps kept (90 days)
    for back in (1, 4, 10, 40):
        day = today - timedelta(days=back)
        out = run_cli(env, "report", "--day", day.isoformat(), "--json")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        want = oracle.figures_as_of(values, data.now, day, ZONE)
        before = oracle.figures_as_of(values, data.now, day - timedelta(days=1), ZONE)
        want.update({f"previous_day_{n}": before[n] for n in oracle.PREVIOUS_DAY_FIGURES
                     if n in before})
        assert "events_total" not in got and "dead_letter_total" not in got
        assert "late_events_total" not in got
        assert "ignored_total" not in got
        assert_matches(got, want, f"--day {day}")
    # Today: report --json carries yesterday's complete figures; --day today is the same
    # figures without the all-time totals.
    now_out = run_cli(env, "report", "--json")
    assert now_out.returncode == 0, now_out.stderr
    got_now = json.loads(now_out.stdout)
    want_now = oracle.compute_figures(values, data.now, ZONE)
    want_now.update(oracle.previous_day_figures(values, data.now, ZONE))
    assert_matches(got_now, want_now, "now")
    today_out = run_cli(env, "report", "--day", today.isoformat(), "--json")
    assert json.loads(today_out.stdout) == {k: v for k, v in got_now.items()
                                            if k not in ("events_total", "dead_letter_total",
                                                         "late_events_total",
                                                         "users_forgotten_total",
                                                         "ignored_total")}
    # The table form prints the day in its title.
    table = run_cli(env, "report", "--day", (today - timedelta(days=1)).isoformat())
    assert table.returncode == 0 and (today - timedelta(days=1)).isoformat() in table.stdout


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("engagement-stream: "), out.stderr
    assert out.stdout == ""
    return lines[0]


def test_report_day_refusals(filled: tuple[str, ds.Dataset]) -> None:
    url, data = filled
    today = data.now.astimezone(ZoneInfo(ZONE)).date()
    env = cli_env(url)
    future = run_cli(env, "report", "--day", (today + timedelta(days=1)).isoformat())
    assert future.returncode == 2 and "after today" in one_line_error(future)
    old = today - timedelta(days=90 - 30)
    gone = run_cli(env, "report", "--day", old.isoformat(), "--json")
    line = one_line_error(gone)
    assert gone.returncode == 2 and "STREAM_RETENTION_DAYS=90" in line
    assert (old + timedelta(days=1)).isoformat() in line
    assert run_cli(env, "report", "--day", (old + timedelta(days=1)).isoformat(),
                   "--json").returncode == 0
    other = run_cli(cli_env(url, "Europe/Berlin"), "report", "--json")
    assert other.returncode == 2
    assert f"STREAM_TIMEZONE={ZONE}" in one_line_error(other)


def test_worker_refuses_another_timezone(broker: TansuBroker, redis_server: RedisServer,
                                         topics: Topics) -> None:
    fresh_store(redis_server.url, "Europe/Berlin", buckets=16384).close()
    env = worker_env(broker.bootstrap, redis_server.url,
                     {**topics.env(), "STREAM_TIMEZONE": "UTC", "STREAM_METRICS_PORT": "0"})
    out = run_cli(env, "worker")
    assert out.returncode == 2, out.stderr
    line = one_line_error(out)
    assert "STREAM_TIMEZONE=Europe/Berlin" in line and "UTC" in line
    # The store is untouched: still Berlin's.
    ok = run_cli({**env, "STREAM_TIMEZONE": "Europe/Berlin"}, "report", "--json")
    assert ok.returncode == 0, ok.stderr


def test_oracle_as_of_day_ignores_later_events() -> None:
    """The oracle's own as-of rule: only events dated on or before the day count."""
    tz = ZoneInfo(ZONE)
    now = datetime(2026, 11, 22, 15, 0, tzinfo=tz)
    ev = [{"event_id": "s", "type": "signup", "user_id": "u", "ts": "2026-11-10T23:59:59-05:00"},
          {"event_id": "c", "type": "cancellation", "user_id": "u",
           "ts": "2026-11-11T00:00:00-05:00"}]
    values = [json.dumps(e).encode() for e in ev]
    assert oracle.figures_as_of(values, now, date(2026, 11, 10), ZONE)["customers"] == 1
    assert oracle.figures_as_of(values, now, date(2026, 11, 11), ZONE)["customers"] == 0

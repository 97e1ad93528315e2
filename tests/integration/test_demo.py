"""The embedded demo: starts, shows active users on /metrics within 60 s, keeps today's
active users within 1.1 times yesterday's without ever falling, and leaves no process
behind after Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stream.demo.localservers import TansuBroker
from tests.support.kafka import consume_all
from tests.support.workers import ROOT, wait_until


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children of children too), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def metric(port: int, name: str) -> float | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.mark.slow
def test_demo_starts_shows_dau_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "demo", "--no-view", "--users", "1000",
             "--rate", "100", "--metrics-port", "0"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            port: list[int] = []

            def port_known() -> bool:
                out.seek(0)
                m = re.search(rb"metrics  http://127\.0\.0\.1:(\d+)/metrics", out.read())
                if m:
                    port.append(int(m.group(1)))
                return bool(m)

            wait_until(port_known, 60, "the demo to print its metrics address")
            wait_until(lambda: (metric(port[0], "engagement_daily_active_users") or 0) > 0,
                       60 - (time.monotonic() - started), "non-zero DAU on /metrics")
            assert (metric(port[0], "engagement_monthly_active_users") or 0) > 0
            children = descendants(proc.pid)
            assert children, "the demo should run its broker and Redis as child processes"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wait_until(lambda: not any(alive(p) for p in children), 10,
                   "every process the demo started to be gone")
        out.seek(0)
        assert b"demo stopped" in out.read()


def zone_at_ten() -> str:
    """A fixed-offset zone where it is about 10:00 now: a test of a few minutes then never
    crosses that zone's midnight, where today's figures start again from nothing."""
    offset = (10 - datetime.now(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-2 is UTC+2


@pytest.mark.slow
def test_todays_active_users_stay_within_yesterdays_and_never_fall() -> None:
    """The demo's bound: four minutes into the demo, today's DAU is at most 1.1 times
    yesterday's whole-day DAU, and it never falls.

    Checked faster, and more strictly, by playing the whole rest of today: the demo plays
    a fixed plan of today's events (the same model draw as the history) at a speed set by
    --day-minutes, so what it has sent after t seconds is the plan up to the simulated
    moment now + t * speed. Today's active users only grow with that moment, and the
    moment reached after four minutes at the default speed (10 min a day) is at most the
    end of the day. So a run at 30 s a day that plays the day to its end (and then the
    replay of its sessions, which adds no user) meets the whole day's DAU, the largest the
    default run can show at four minutes or at any time. The view runs too (its plain
    lines, since the output is not a terminal), and Ctrl-C must leave nothing behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update(PYTHONPATH=str(ROOT), STREAM_TIMEZONE=zone_at_ten())
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "demo", "--users", "5000", "--history-days", "3",
             "--day-minutes", "0.5", "--no-prometheus", "--metrics-port", "0"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

        def printed() -> str:
            out.seek(0)
            return out.read().decode(errors="replace")

        try:
            port: list[int] = []

            def port_known() -> bool:
                m = re.search(r"metrics  http://127\.0\.0\.1:(\d+)/metrics", printed())
                if m:
                    port.append(int(m.group(1)))
                return bool(m)

            wait_until(port_known, 60, "the demo to print its metrics address")
            dau: list[float] = []

            def sample_until_played() -> bool:
                value = metric(port[0], "engagement_daily_active_users")
                if value is not None:
                    dau.append(value)
                # A plain line of the view after the day was played, with no lag left.
                return bool(re.search(r"day played.*lag=0 ", printed()))

            wait_until(sample_until_played, 120, "the demo to play today", interval=0.25)
            for _ in range(8):  # and some of the replay of today's sessions
                time.sleep(0.5)
                value = metric(port[0], "engagement_daily_active_users")
                assert value is not None
                dau.append(value)
            yesterday = metric(port[0], "engagement_previous_day_daily_active_users")
            assert yesterday, printed()[-3000:]
            assert all(b >= a for a, b in itertools.pairwise(dau)), dau
            assert dau[-1] <= 1.1 * yesterday, (dau[-1], yesterday)
            # The whole day is believable: it rose through the day to about yesterday's.
            assert dau[0] < 0.9 * dau[-1] and dau[-1] >= 0.9 * yesterday, (dau, yesterday)
            lines = [ln for ln in printed().splitlines() if "daily_active_users=" in ln]
            assert lines and not any("\x1b" in ln for ln in lines)
            children = descendants(proc.pid)
            assert children
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0, printed()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wait_until(lambda: not any(alive(p) for p in children), 10,
                   "every process the demo started to be gone")
        assert "demo stopped" in printed()


@pytest.mark.slow
def test_the_live_view_fits_an_80x24_terminal() -> None:
    """The real demo in a real terminal of 80x24 (a private tmux server): the view shows
    every figure with a trend and its change against yesterday, the pipeline, dead letters
    and addresses, and no line wraps: tmux joins wrapped lines with -J, so the screen read
    with and without -J must be the same lines."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux not found on PATH: install the Debian 'tmux' package"
    server = ["tmux", "-L", f"stream-view-{uuid.uuid4().hex[:12]}", "-f", "/dev/null"]
    command = shlex.join(["env", f"PYTHONPATH={ROOT}", f"STREAM_TIMEZONE={zone_at_ten()}",
                          sys.executable, "-m", "stream", "demo", "--users", "2000",
                          "--history-days", "2", "--day-minutes", "2", "--no-prometheus",
                          "--metrics-port", "0"])

    def screen(*flags: str) -> list[str]:
        out = subprocess.run([*server, "capture-pane", "-p", *flags, "-t", "demo"],
                             capture_output=True, text=True, timeout=10)
        # Trailing spaces dropped: -J keeps them, and they are no wrapping.
        return [ln.rstrip() for ln in out.stdout.rstrip("\n").split("\n")]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_", "TMUX"))}
    subprocess.run([*server, "new-session", "-d", "-s", "demo", "-x", "80", "-y", "24",
                    f"cd {shlex.quote(str(ROOT))} && {command}; sleep 60"],
                   env=env, check=True, timeout=10)
    try:
        wait_until(lambda: any(ln.startswith("pipeline") for ln in screen()), 90,
                   "the live view on the terminal")
        time.sleep(6)  # a few readings, for the trends
        lines = screen()
        text = "\n".join(lines)
        assert lines == screen("-J"), f"a line wrapped:\n{text}"
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines), text
        for label in ("Daily active users", "Weekly active users", "Monthly active (30 d)",
                      "Stickiness DAU/MAU", "Customers", "Churn (30 d)", "NPS (30 d)",
                      "CSAT 4-5 (30 d)"):
            (row,) = [ln for ln in lines if ln.startswith(label)]
            assert re.search(r"[▁▂▃▄▅▆▇█]{2,}", row), f"no trend in {row!r}"
            assert re.search(r"[+-]\d+\.\d( %| pt)?\s*$", row), f"no change in {row!r}"
        assert any("compressed day" in ln for ln in lines), text
        assert any(ln.startswith("Conversion ") for ln in lines), text
        assert any(re.match(r"pipeline +[\d,]+ msg/s .* lag \d", ln) for ln in lines), text
        assert any(ln.startswith("dead letters") for ln in lines), text
        assert any(re.match(r"metrics +http://127\.0\.0\.1:\d+/metrics", ln) for ln in lines)
        subprocess.run([*server, "send-keys", "-t", "demo", "C-c"], check=True, timeout=10)
        wait_until(lambda: "demo stopped" in "\n".join(screen()), 30, "the demo to stop")
    finally:
        subprocess.run([*server, "kill-server"], capture_output=True, timeout=10)


@pytest.mark.slow
def test_generate_keeps_todays_active_users_within_yesterdays() -> None:
    """`generate` (the compose demo profile's event stream) plays today as the demo does:
    once it has played the whole day and replayed some of it, today's active users in
    what it produced (counted from the messages themselves) are still those of one day,
    within 10 % of yesterday's."""
    zone = zone_at_ten()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    with TansuBroker() as broker:
        broker.create_topics(["engagement.activity", "engagement.conversions",
                              "engagement.cancellations", "engagement.surveys"], 2)
        env.update(PYTHONPATH=str(ROOT), STREAM_TIMEZONE=zone)
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "generate", "--brokers", broker.bootstrap,
             "--users", "3000", "--rate", "400", "--history-days", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        try:
            time.sleep(25)  # about 2500 events a day at 400/s: the day, then replays
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        read = asyncio.run(consume_all(broker.bootstrap, "engagement.activity", timeout=60))
    tz = ZoneInfo(zone)
    today = datetime.now(tz).date()
    by_day: dict[object, set[str]] = {}
    messages: collections.Counter[object] = collections.Counter()
    for message in read:
        if message.key == b"bad-message":  # the dead-letter path's samples
            continue
        assert message.value is not None
        event = json.loads(message.value)
        if event["type"] != "activity":
            continue
        ts = event["ts"]
        at = (datetime.fromtimestamp(ts / 1000, UTC) if isinstance(ts, int)
              else datetime.fromisoformat(ts))
        day = at.astimezone(tz).date()
        by_day.setdefault(day, set()).add(event["user_id"])
        messages[day] += 1
    yesterday = by_day[today - timedelta(days=1)]
    # The day was played, and its sessions replayed more than once since.
    assert messages[today] > 3 * messages[today - timedelta(days=1)], messages
    assert 0.9 * len(yesterday) <= len(by_day[today]) <= 1.1 * len(yesterday), (
        len(by_day[today]), len(yesterday))

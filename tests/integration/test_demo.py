"""The embedded demo: starts, shows active users on /metrics within 60 s, and leaves no
process behind after Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

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

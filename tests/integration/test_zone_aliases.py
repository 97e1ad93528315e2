"""A store created with one name of a zone accepts every other name of the same zone
(`UTC` and `Etc/UTC`...) and still refuses another zone in one line; through the real
command against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stream.demo.localservers import RedisServer
from tests.support.direct import fresh_store
from tests.support.workers import ROOT


def report(url: str, zone: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update({"PYTHONPATH": str(ROOT), "STREAM_REDIS_URL": url, "STREAM_TIMEZONE": zone,
                "STREAM_USER_BUCKETS": "64"})
    return subprocess.run([sys.executable, "-m", "stream", "report", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize(("created", "given"), [
    ("UTC", "Etc/UTC"), ("UTC", "Zulu"), ("Etc/UTC", "UTC"), ("UTC", "Etc/Universal"),
    ("Asia/Calcutta", "Asia/Kolkata"),
])
def test_store_accepts_another_name_of_its_zone(redis_server: RedisServer, created: str,
                                                given: str) -> None:
    fresh_store(redis_server.url, created).close()
    out = report(redis_server.url, given)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("created", "given"), [
    ("UTC", "Etc/GMT"), ("UTC", "Europe/Berlin"), ("Asia/Kolkata", "Asia/Karachi"),
])
def test_store_refuses_another_zone(redis_server: RedisServer, created: str,
                                    given: str) -> None:
    fresh_store(redis_server.url, created).close()
    out = report(redis_server.url, given)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert f"STREAM_TIMEZONE={created}" in lines[0] and "Traceback" not in out.stderr

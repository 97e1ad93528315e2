"""Run real workers (`python -m stream worker`) as subprocesses and read what they export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stream.demo.localservers import free_port

ROOT = Path(__file__).resolve().parents[2]


#: The paths a worker can take: with the compiled parts, and the pure Python definition
#: (`STREAM_NO_EXTENSIONS=1`). End-to-end figure tests run on both.
PATHS = ("compiled", "pure")
#: What the worker logs at start on the pure path (stream/_compiled.py).
PURE_PATH_LINE = "STREAM_NO_EXTENSIONS is set: every compiled part is off"


def path_env(path: str) -> dict[str, str]:
    """The environment that puts a worker subprocess on `path` (one of PATHS)."""
    assert path in PATHS, path
    return {"STREAM_NO_EXTENSIONS": "1"} if path == "pure" else {}


def worker_env(bootstrap: str, redis_url: str,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker against the test broker (fast group joins) and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update({
        "STREAM_KAFKA_BROKERS": bootstrap,
        "STREAM_REDIS_URL": redis_url,
        "STREAM_SESSION_TIMEOUT_MS": "6000",
        "STREAM_HEARTBEAT_INTERVAL_MS": "1000",
        "STREAM_METRICS_HOST": "127.0.0.1",
        "STREAM_METRICS_CACHE_SECONDS": "0",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra or {})
    return env


class WorkerProcess:
    """One worker subprocess with its own metrics port; output goes to a log file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**env, "STREAM_METRICS_PORT": str(self.port)}
        # Kept after the process exits so a failing test can show the worker's log.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="worker-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, OSError):
            return 0, ""  # not listening (yet, or any more)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics keyed by (name, sorted labels)."""
        _, text = self.get("/metrics")
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def report_json(env: dict[str, str]) -> dict[str, Any]:
    """`python -m stream report --json` with the worker's settings."""
    out = subprocess.run([sys.executable, "-m", "stream", "report", "--json"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def folded_total(figures: dict[str, Any]) -> int:
    """Messages accounted for in Redis: valid events plus dead letters."""
    return sum(figures["events_total"].values()) + sum(figures["dead_letter_total"].values())

"""The demo's Prometheus, seen in a real browser.

Starts the real ``python -m stream demo`` (which starts Prometheus with the shipped rules
when ``prometheus`` is installed), reads the Prometheus address and alerts page it
prints, loads that page in headless Chromium (the distribution's package) and checks that
the rendered page lists every alert group and every alert of the shipped rule files.
Then Ctrl-C (SIGINT) must stop the demo and its Prometheus.

Distribution builds of Prometheus may ship only the classic web UI (Debian's serves
``/classic/alerts``, upstream ``/alerts``); the demo prints whichever exists.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import DEPLOY

from tests.support.workers import ROOT, wait_until

RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yml"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=10000",
]


def alert_groups() -> dict[str, list[str]]:
    """Each shipped group that holds alerts, with the names of its alerts."""
    out: dict[str, list[str]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            alerts = [r["alert"] for r in group["rules"] if "alert" in r]
            if alerts:
                out[group["name"]] = alerts
    return out


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    # Not a skip: CI must run this (scripts/install.sh --dev installs Debian's chromium).
    assert path, "chromium not found on PATH: install the Debian 'chromium' package"
    return path


def dump_dom(chromium: str, url: str, profile: Path, timeout: float = 60) -> str:
    """The DOM of `url` after its scripts ran, as headless Chromium serialises it."""
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not render {url} within {timeout:.0f}s") from None
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.browser
def test_demo_prometheus_alerts_page_lists_the_alert_groups(chromium: str, tmp_path: Path) -> None:
    assert shutil.which("prometheus"), "prometheus not found on PATH (scripts/install.sh)"
    groups = alert_groups()
    assert groups, "the shipped rule files hold no alert"

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "demo",
                "--no-view",
                "--metrics-port",
                "0",
                "--users",
                "500",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

        def printed() -> str:
            out.seek(0)
            return out.read().decode(errors="replace")

        try:
            found: dict[str, str] = {}

            def addresses_printed() -> bool:
                text = printed()
                prom = re.search(r"^prometheus (http://127\.0\.0\.1:\d+)\s*$", text, re.M)
                alerts = re.search(r"^\s+alerts\s+(http://\S+)\s*$", text, re.M)
                if prom and alerts:
                    found.update(prom=prom.group(1), alerts=alerts.group(1))
                return bool(prom and alerts)

            wait_until(addresses_printed, 60, "the demo to print Prometheus' address")
            assert found["alerts"].startswith(found["prom"] + "/"), found
            assert found["alerts"].endswith("/alerts"), found
            assert answers(found["alerts"]), f"{found['alerts']} does not answer 200"

            dom = dump_dom(chromium, found["alerts"], tmp_path / "chromium-profile")
            assert "<html" in dom.lower(), dom[:500]
            missing = [g for g in groups if g not in dom]
            missing += [a for alerts in groups.values() for a in alerts if a not in dom]
            assert not missing, f"not on {found['alerts']}: {missing}\n{dom[:3000]}"

            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0, printed()[-3000:]
        finally:
            if proc.poll() is None:  # a failed check: still let the demo stop its servers
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        wait_until(
            lambda: not answers(found["prom"] + "/-/ready"), 10, "the demo's Prometheus to stop"
        )
        assert "demo stopped" in printed()

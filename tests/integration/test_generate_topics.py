"""`generate` and `demo` honour the topics they are given (`STREAM_TOPICS`, `--topics`):
against a real broker, every message lands on those topics, routed by type as the README
says; the demo's worker (which reads only those topics) sees the events."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from stream.demo.localservers import TansuBroker
from tests.support.kafka import consume_all, highwaters
from tests.support.workers import ROOT, wait_until


def test_generate_writes_to_the_configured_topics(broker: TansuBroker) -> None:
    suffix = uuid.uuid4().hex[:8]
    first, second = f"product-{suffix}", f"marketing-{suffix}"
    broker.create_topics([first, second], 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update({"PYTHONPATH": str(ROOT), "STREAM_KAFKA_BROKERS": broker.bootstrap,
                "STREAM_TOPICS": f"{first},{second}"})
    proc = subprocess.Popen([sys.executable, "-m", "stream", "generate", "--users", "100",
                             "--rate", "300", "--history-days", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        def both_filled() -> bool:
            counts = [sum(asyncio.run(highwaters(broker.bootstrap, t)).values())
                      for t in (first, second)]
            return all(c > 50 for c in counts)

        wait_until(both_filled, 90, "events on both configured topics")
        time.sleep(1)  # some live events too
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    seen: dict[str, set[str]] = {}
    for topic in (first, second):
        for message in asyncio.run(consume_all(broker.bootstrap, topic)):
            try:
                etype = json.loads(message.value or b"")["type"]
            except (ValueError, KeyError, TypeError):
                continue  # the generator's deliberate bad messages
            seen.setdefault(topic, set()).add(etype)
    # Two topics: activity, signups and cancellations on the first, the rest on the second.
    assert seen[first] <= {"activity", "signup", "cancellation"} and "activity" in seen[first]
    assert seen[second] <= {"visit", "conversion", "survey"} and "visit" in seen[second]


@pytest.mark.slow
def test_demo_with_topics_folds_its_events() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "demo", "--no-view", "--no-prometheus",
             "--users", "300", "--rate", "50", "--history-days", "2", "--metrics-port", "0",
             "--topics", "mine.events,mine.more", "--dlq-topic", "mine.dead"],
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

            def events_folded() -> bool:
                import urllib.request

                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/metrics",
                                                timeout=5) as r:
                        text = r.read().decode()
                except OSError:
                    return False
                m = re.search(r'^engagement_events_total\{type="activity"\} (\S+)$', text, re.M)
                return m is not None and float(m.group(1)) > 0

            wait_until(events_folded, 90, "activity events folded from the given topics")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

"""The figures collector: background snapshots, and no figures after a failed read."""

from __future__ import annotations

import threading
import time
from typing import Any

from stream.metrics.collector import FiguresCollector


class Source:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def read(self) -> dict[str, Any]:
        self.gate.wait()
        self.calls += 1
        if self.fail:
            raise ConnectionError("redis down")
        return {"daily_active_users": self.calls}


def test_scrape_never_waits_for_a_slow_read() -> None:
    src = Source()
    errors: list[Exception] = []
    col = FiguresCollector(src.read, cache_seconds=0.05, on_error=errors.append)
    col.start()
    try:
        first = col.figures()
        assert first is not None and first["daily_active_users"] >= 1
        src.gate.clear()  # the next background read blocks, as if Redis were busy
        time.sleep(0.1)
        started = time.monotonic()
        snapshot = col.figures()
        assert time.monotonic() - started < 0.05
        assert snapshot is not None
        names = [m.name for m in col.collect()]
        assert "engagement_daily_active_users" in names
        src.fail = True
        src.gate.set()
        deadline = time.monotonic() + 2
        while col.figures() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert col.figures() is None and list(col.collect()) == []
        assert errors and isinstance(errors[0], ConnectionError)
    finally:
        src.gate.set()
        col.stop()


def test_without_background_a_stale_cache_is_read_on_scrape() -> None:
    src = Source()
    col = FiguresCollector(src.read, cache_seconds=0)
    assert col.figures() == {"daily_active_users": 1}
    assert col.figures() == {"daily_active_users": 2}
    col.start()  # no thread with cache_seconds 0
    assert col.figures() == {"daily_active_users": 3}


def test_cohort_late_and_segment_cohort_series() -> None:
    """The section-6 figures as Prometheus series: `day` and `age` labels, the late-events
    counter with its `_total` suffix, the segment variant with three labels."""
    from prometheus_client import CollectorRegistry, generate_latest

    figs = {"cohort_retention_ratio": {"1": 0.5, "30": 0.25}, "cohort_users": {"1": 4},
            "previous_day_cohort_retention_ratio": {"7": 1.0},
            "late_events_total": {"1d": 3, "31d+": 0},
            "segment_cohort_retention_ratio": {"plan": {"pro": {"14": 0.75}}}}
    registry = CollectorRegistry()
    registry.register(FiguresCollector(lambda: figs, cache_seconds=0))
    text = generate_latest(registry).decode()
    for line in ('engagement_cohort_retention_ratio{day="1"} 0.5',
                 'engagement_cohort_retention_ratio{day="30"} 0.25',
                 'engagement_cohort_users{day="1"} 4.0',
                 'engagement_previous_day_cohort_retention_ratio{day="7"} 1.0',
                 'engagement_late_events_total{age="1d"} 3.0',
                 'engagement_late_events_total{age="31d+"} 0.0',
                 'engagement_segment_cohort_retention_ratio{day="14",dimension="plan",'
                 'value="pro"} 0.75',
                 "# TYPE engagement_late_events_total counter"):
        assert line in text, (line, text)

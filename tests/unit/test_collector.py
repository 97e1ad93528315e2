"""The figures collector: background snapshots, no figures after a failed read, and the
rendering of figures at every label depth."""

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


# -- rendering at every label depth ------------------------------------------------------

def _family(text: str, name: str) -> list[str]:
    """The exposition lines of family `name` (its HELP and TYPE lines and samples)."""
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"# HELP {name} ")))
    end = start + 1
    while end < len(lines) and not lines[end].startswith("# HELP "):
        end += 1
    return lines[start:end]


def _render(figs: dict[str, Any]) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(FiguresCollector(lambda: figs, cache_seconds=0))
    return generate_latest(registry).decode()


def test_rendering_at_every_label_depth() -> None:
    """No label, one label (campaign, day), the previous day's with a label, two labels
    (segment dimension and value; days-active window and days), three (segment cohort),
    and counters with and without a label: exposition lines written out by hand."""
    figs = {
        "daily_active_users": 5,
        "nps_score": -12.5,
        "conversion_ratio": {"spring": 0.25, "other": 0.1},
        "previous_day_conversion_ratio": {"spring": 0.5},
        "cohort_users": {"1": 4, "30": 2},
        "segment_customers": {"plan": {"pro": 3, "free": 0}, "country": {"de": 1}},
        "days_active_users": {"7d": {"1": 2, "7": 1}},
        "segment_cohort_retention_ratio": {"plan": {"pro": {"1": 0.75}}},
        "events_total": {"activity": 20, "survey": 0},
        "users_forgotten_total": 2,
    }
    text = _render(figs)
    assert _family(text, "engagement_daily_active_users") == [
        "# HELP engagement_daily_active_users Distinct users with activity today "
        "(HyperLogLog estimate).",
        "# TYPE engagement_daily_active_users gauge",
        "engagement_daily_active_users 5.0",
    ]
    assert _family(text, "engagement_nps_score") == [
        "# HELP engagement_nps_score Net Promoter Score over the rolling 30 days "
        "(-100..100).",
        "# TYPE engagement_nps_score gauge",
        "engagement_nps_score -12.5",
    ]
    assert _family(text, "engagement_conversion_ratio")[1:] == [
        "# TYPE engagement_conversion_ratio gauge",
        'engagement_conversion_ratio{campaign="spring"} 0.25',
        'engagement_conversion_ratio{campaign="other"} 0.1',
    ]
    assert _family(text, "engagement_previous_day_conversion_ratio")[1:] == [
        "# TYPE engagement_previous_day_conversion_ratio gauge",
        'engagement_previous_day_conversion_ratio{campaign="spring"} 0.5',
    ]
    assert _family(text, "engagement_cohort_users") == [
        "# HELP engagement_cohort_users Users in the signup cohort behind "
        "cohort_retention_ratio.",
        "# TYPE engagement_cohort_users gauge",
        'engagement_cohort_users{day="1"} 4.0',
        'engagement_cohort_users{day="30"} 2.0',
    ]
    assert _family(text, "engagement_segment_customers") == [
        "# HELP engagement_segment_customers Customers whose latest signup is in the "
        "segment.",
        "# TYPE engagement_segment_customers gauge",
        'engagement_segment_customers{dimension="plan",value="pro"} 3.0',
        'engagement_segment_customers{dimension="plan",value="free"} 0.0',
        'engagement_segment_customers{dimension="country",value="de"} 1.0',
    ]
    assert _family(text, "engagement_days_active_users")[1:] == [
        "# TYPE engagement_days_active_users gauge",
        'engagement_days_active_users{days="1",window="7d"} 2.0',
        'engagement_days_active_users{days="7",window="7d"} 1.0',
    ]
    assert _family(text, "engagement_segment_cohort_retention_ratio")[1:] == [
        "# TYPE engagement_segment_cohort_retention_ratio gauge",
        'engagement_segment_cohort_retention_ratio{day="1",dimension="plan",value="pro"} 0.75',
    ]
    assert _family(text, "engagement_events_total") == [
        "# HELP engagement_events_total Valid events consumed, by type (all workers, from "
        "Redis).",
        "# TYPE engagement_events_total counter",
        'engagement_events_total{type="activity"} 20.0',
        'engagement_events_total{type="survey"} 0.0',
    ]
    assert _family(text, "engagement_users_forgotten_total") == [
        "# HELP engagement_users_forgotten_total Users erased with `forget` (all workers, "
        "from Redis).",
        "# TYPE engagement_users_forgotten_total counter",
        "engagement_users_forgotten_total 2.0",
    ]


def test_absent_figures() -> None:
    """An absent figure without labels, or of the segments or the scan (not configured,
    not computed yet), is not exported; an absent labelled figure of the others is a
    family without samples."""
    text = _render({})
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert names == [
        "engagement_conversion_ratio", "engagement_events_total",
        "engagement_dead_letter_total", "engagement_ignored_total",
        "engagement_previous_day_conversion_ratio", "engagement_cohort_retention_ratio",
        "engagement_cohort_users", "engagement_previous_day_cohort_retention_ratio",
        "engagement_previous_day_cohort_users", "engagement_late_events_total",
    ]
    assert not [line for line in text.splitlines() if not line.startswith("#")]

"""The demo's live view: sparklines, change against yesterday, pipeline and addresses, in
80x24 without wrapping; one plain line per reading when the output is not a terminal.
(The real demo under a real terminal of 80x24 is tests/integration/test_demo.py.)"""

from __future__ import annotations

import io
import re
import urllib.parse
from typing import Any

from rich.console import Console

from stream.view import SPARK_BLOCKS, Links, LiveView, Pipeline, sparkline

CAMPAIGNS = ["black-friday", "newsletter", "partner-blog", "referral", "retargeting",
             "spring-sale", "webinar"]
LINKS = Links("http://127.0.0.1:9464/metrics", "http://127.0.0.1:9090",
              "http://127.0.0.1:9090/graph", "http://127.0.0.1:9090/alerts")


def figures(step: int) -> dict[str, Any]:
    """Readings of a growing day: DAU 1000 + 10 * step against yesterday's 1000."""
    return {
        "daily_active_users": 1000 + 10 * step,
        "previous_day_daily_active_users": 1000,
        "weekly_active_users": 3000,
        "previous_day_weekly_active_users": 2900,
        "monthly_active_users": 5000,
        "previous_day_monthly_active_users": 5000,
        "stickiness_ratio": (1000 + 10 * step) / 5000,
        "previous_day_stickiness_ratio": 0.25,
        "customers": 4500,
        "previous_day_customers": 4490,
        "churn_ratio": 0.031,
        "previous_day_churn_ratio": 0.030,
        "first_week_active_ratio": 0.62,
        "previous_day_first_week_active_ratio": 0.60,
        "nps_score": 31.5,
        "previous_day_nps_score": 30.0,
        "csat_ratio": 0.8,
        "previous_day_csat_ratio": 0.81,
        "conversion_ratio": {c: 0.01 * (i + 1) for i, c in enumerate(CAMPAIGNS)},
        "previous_day_conversion_ratio": {c: 0.01 * i for i, c in enumerate(CAMPAIGNS)},
        "events_total": {"activity": 5000},
        "dead_letter_total": {"invalid_json": 3, "invalid_event": 5, "late": 0, "future": 1},
    }


def filled_view(readings: int = 30) -> LiveView:
    view = LiveView(LINKS, window=300.0)
    for step in range(readings):
        view.sample(figures(step), Pipeline(rate=5.0 + step, lag=7, folded=1234), step * 10.0)
    return view


def render(view: LiveView, width: int = 80, height: int = 24) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, force_terminal=True,
                      color_system=None, legacy_windows=False)
    console.print(view.render("compressed day, 10 min a day · simulated 17:42 UTC", height))
    return out.getvalue().rstrip("\n").split("\n")


def test_the_view_fits_80x24_without_wrapping() -> None:
    lines = render(filled_view())
    assert len(lines) <= 23, "\n".join(lines)  # one row left for the cursor
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    # Each figure appears once, on its own line (a wrapped cell would split a label).
    for label in ("Daily active users", "Weekly active users", "Monthly active (30 d)",
                  "Stickiness DAU/MAU", "Customers", "Churn (30 d)", "First-week active",
                  "NPS (30 d)", "CSAT 4-5 (30 d)"):
        assert sum(line.startswith(label) for line in lines) == 1, (label, text)
    assert "compressed day" in lines[0]
    # Conversion rows fill what is left: 24 - 18 fixed rows = 5 of 7 campaigns and a row
    # that says where the others are.
    shown = [ln for ln in lines if ln.startswith("Conversion ")]
    assert len(shown) == 5 and any(ln.startswith("(+2 more on /metrics)") for ln in lines)


def test_each_figure_shows_its_value_trend_and_change_against_yesterday() -> None:
    lines = render(filled_view())
    dau = next(ln for ln in lines if ln.startswith("Daily active users"))
    # DAU went 1000 -> 1290 over the readings; yesterday's whole day was 1000.
    assert "1,290" in dau and "+29.0 %" in dau
    spark = re.search(f"[{SPARK_BLOCKS}]+", dau)
    assert spark is not None and spark.group()[0] == "▁" and spark.group()[-1] == "█"
    assert len(spark.group()) == 20
    stick = next(ln for ln in lines if ln.startswith("Stickiness"))
    assert "25.8 %" in stick and "+0.8 pt" in stick  # 1290/5000 against 25 %
    nps = next(ln for ln in lines if ln.startswith("NPS"))
    assert "+31.5" in nps and "+1.5" in nps
    conv = next(ln for ln in lines if ln.startswith("Conversion black-friday"))
    assert "1.00 %" in conv and "+1.0 pt" in conv
    pipeline = next(ln for ln in lines if ln.startswith("pipeline"))
    assert "34 msg/s" in pipeline and "lag 7" in pipeline
    dead = next(ln for ln in lines if ln.startswith("dead letters"))
    assert "invalid_json 3" in dead and "invalid_event 5" in dead and "future 1" in dead
    assert "late" not in dead  # reasons with none are left out


def test_the_view_links_the_metrics_the_graphs_and_the_alerts() -> None:
    lines = render(filled_view())
    assert any(ln.startswith("metrics") and LINKS.metrics in ln for ln in lines)
    assert any(ln.startswith("graphs") and "http://127.0.0.1:9090/graph" in ln for ln in lines)
    assert any(ln.startswith("alerts") and "http://127.0.0.1:9090/alerts" in ln for ln in lines)
    graph = LINKS.graph()
    assert graph is not None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(graph).query)
    graphed = {v[0] for k, v in query.items() if k.endswith(".expr")}
    assert {"engagement_daily_active_users", "engagement_stickiness_ratio"} <= graphed
    bare = render(_without_prometheus())
    assert any("Prometheus not running" in ln for ln in bare)


def _without_prometheus() -> LiveView:
    view = LiveView(Links("http://127.0.0.1:9464/metrics"))
    view.sample(figures(0), Pipeline(), 0.0)
    return view


def test_a_small_terminal_drops_conversion_rows_first() -> None:
    lines = render(filled_view(), height=20)
    assert len(lines) <= 19
    assert sum(ln.startswith("Conversion ") for ln in lines) == 1
    assert any(ln.startswith("(+6 more on /metrics)") for ln in lines)
    lines = render(filled_view(), height=18)
    assert len(lines) <= 17 and not any(ln.startswith("Conversion ") for ln in lines)
    assert any(ln.startswith("NPS") for ln in lines)


def test_plain_lines_when_not_a_terminal() -> None:
    line = filled_view().plain_line("12:00:00")
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("12:00:00 ")
    assert "daily_active_users=1,290 (+29.0 % vs yesterday)" in line
    assert "dead_letters=invalid_json 3" in line


def test_readings_outside_the_trend_are_shown_but_not_graphed() -> None:
    view = LiveView(LINKS)
    view.sample(figures(0) | {"daily_active_users": 10}, Pipeline(rate=9000.0), 0.0,
                trend=False)
    for step in range(1, 30):
        view.sample(figures(step), Pipeline(rate=5.0), step * 10.0)
    lines = render(view)
    dau = next(ln for ln in lines if ln.startswith("Daily active users"))
    spark = re.search(f"[{SPARK_BLOCKS}]+", dau)
    # The catch-up reading (10 users) would have made the day's rise a flat top.
    assert spark is not None and spark.group().count("█") <= 2
    assert "5 msg/s" in next(ln for ln in lines if ln.startswith("pipeline"))


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == SPARK_BLOCKS
    assert sparkline([5, 5, 5], 10) == "▁▁▁"
    assert sparkline(list(range(100)), 10) == sparkline(list(range(90, 100)), 10)
    assert sparkline([], 5) == ""

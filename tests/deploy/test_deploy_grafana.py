"""Grafana dashboard (generated with grafana-foundation-sdk) and provisioning."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import DEPLOY, load_module

DASH = DEPLOY / "grafana" / "dashboards" / "engagement-stream.json"


@pytest.fixture(scope="module")
def queries():
    return load_module("deploy/queries.py")


def test_dashboard_is_up_to_date():
    gen = load_module("deploy/grafana/dashboard.py")
    assert DASH.read_text() == gen.render(), "run deploy/grafana/dashboard.py"


def test_dashboard_layout_and_panels():
    d = json.loads(DASH.read_text())
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Overview", "Retention cohorts and late data",
                    "Activity depth and lifecycle", "Segments", "Pipeline health"]
    titles = {p["title"] for p in panels}
    for needed in (
        "Daily active users",
        "Weekly active users",
        "Monthly active users",
        "Stickiness trend",
        "Churn and retention",
        "NPS",
        "CSAT",
        "Conversion by campaign",
        "First-week participation",
        "Events/s by type",
        "Consumer lag by topic",
        "Dead letters/s by reason",
        "Batch apply latency",
        "Day-N retention of signup cohorts",
        "Signup cohort sizes",
        "Late events/s by age",
        "Days active in the last 7 days",
        "Lifecycle",
        "Monthly active users by segment",
        "D1 retention by segment",
    ):
        assert needed in titles, needed
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24


def test_dashboard_queries_use_known_series(queries):
    recorded = {q.name for q in queries.rule_expressions() if q.source == "recording"}
    dash = queries.dashboard_queries()
    assert len(dash) >= 30
    for q in dash:
        for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", q.expr):
            assert name in recorded, f"{q.name} uses unknown recorded series {name}"
        assert "$" not in q.promql(), q.name


def test_queries_helper_lists_rules(queries):
    rules = queries.rule_expressions()
    assert {q.source for q in rules} == {"recording", "alert"}
    assert any(q.name == "EngagementChurnHigh" for q in rules)
    assert len(queries.all_queries()) == len(rules) + len(queries.dashboard_queries())


def test_provisioning():
    ds = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "engagement-stream.yml").read_text()
    )
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_figure_family_has_a_panel(queries):
    """Each figure family the worker exports is read by at least one panel (through its
    recorded series), the days-active, lifecycle, segment and cohort families included."""
    from stream.catalogue import CATALOGUE

    exprs = " ".join(q.expr for q in queries.dashboard_queries())
    recorded = {q.name: q.expr for q in queries.rule_expressions() if q.source == "recording"}
    read = exprs + " ".join(v for k, v in recorded.items() if k in exprs)
    # Recorded series read by other recorded series that panels read (one level down).
    read += " ".join(v for k, v in recorded.items() if k in read)
    for name in (f.name for f in CATALOGUE):
        if name.startswith("previous_day_") or name in (
            # the same figures of yesterday, or only seen through a figure derived from them
            "segment_weekly_active_users",
            "segment_retention_ratio",
            "segment_cohort_users",
        ):
            continue
        assert f"engagement_{name}" in read, f"no panel reads engagement_{name}"

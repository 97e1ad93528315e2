"""Prometheus configuration, rules and their promtool unit tests."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from conftest import DEPLOY, ROOT, load_module

PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.rules.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.test.yml"))
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


@pytest.fixture(scope="module")
def gen():
    return load_module("deploy/prometheus/generate.py")


def _rules(kind: str) -> list[dict]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [r for r in group["rules"] if kind in r]
    return out


def test_generated_files_are_up_to_date(gen):
    for path, text in gen.outputs().items():
        assert path.exists(), f"{path.relative_to(ROOT)} missing: run deploy/prometheus/generate.py"
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} differs from deploy/prometheus/generate.py's output"
        )


def test_promtool_check_config(promtool):
    r = subprocess.run(
        [promtool, "check", "config", str(PROM / "prometheus.yml")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules(promtool):
    assert len(RULE_FILES) == 2
    r = subprocess.run(
        [promtool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules(promtool):
    assert TEST_FILES
    # One process per file, in parallel: the 7-day baselines make the business file slow.
    procs = [
        subprocess.Popen(
            [promtool, "test", "rules", str(f)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROM / "tests",
        )
        for f in TEST_FILES
    ]
    failures = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            failures.append(out)
    assert not failures, "\n".join(failures)


def test_every_alert_has_firing_and_silent_unit_tests(gen):
    fired: dict[str, int] = {}
    silent: dict[str, int] = {}
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test["alert_rule_test"]:
                bucket = fired if check["exp_alerts"] else silent
                bucket[check["alertname"]] = bucket.get(check["alertname"], 0) + 1
    for name in gen.alert_names():
        assert fired.get(name), f"no unit test where {name} fires"
        assert silent.get(name), f"no unit test where {name} stays silent"


def test_required_alerts_exist(gen):
    expected = {
        "EngagementStickinessDrop",
        "EngagementChurnHigh",
        "EngagementNPSDrop",
        "EngagementCSATLow",
        "EngagementConversionDrop",
        "EngagementConsumerLagGrowing",
        "EngagementNoEventsFolded",
        "EngagementDeadLetterRateHigh",
        "EngagementRedisErrors",
        "EngagementExporterDown",
        "EngagementD1RetentionDrop",
        "EngagementOldEventsSurge",
    }
    assert expected <= {r["alert"] for r in _rules("alert")}
    assert "job:engagement_churn_ratio:max > 0.05" in {r["expr"] for r in _rules("alert")}


def test_alerts_are_documented_and_complete(gen):
    docs = (ROOT / "docs" / "operations.md").read_text()
    anchors = {m.group(1).lower() for m in re.finditer(r"^#{2,4} +([A-Za-z0-9]+)\s*$", docs, re.M)}
    for rule in _rules("alert"):
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        url = ann["runbook_url"]
        assert url.startswith(gen.RUNBOOK_BASE + "#"), url
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"docs/operations.md has no runbook heading for {rule['alert']}"
        assert rule.get("for"), rule["alert"]


def test_recording_rule_names_follow_convention():
    names = [r["record"] for r in _rules("record")]
    assert len(names) == len(set(names))
    for name in names:
        assert RECORD_NAME.match(name), f"{name} is not level:metric:operation"


def test_figures_are_aggregated_with_max_not_sum():
    for rule in _rules("record"):
        expr = rule["expr"]
        for metric in ("engagement_events_total", "engagement_dead_letter_total"):
            if metric in expr:
                assert expr.startswith("max by"), rule["record"]
        if rule["record"].endswith(":max"):
            assert "sum" not in expr, rule["record"]


def test_alerts_use_only_defined_series():
    recorded = {r["record"] for r in _rules("record")}
    for rule in _rules("alert"):
        for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]):
            assert name in recorded, f"{rule['alert']} uses unknown series {name}"


def test_prometheus_rule_matches_rule_files():
    doc = yaml.safe_load((DEPLOY / "kubernetes" / "prometheusrule.yaml").read_text())
    groups = []
    for path in RULE_FILES:
        groups += yaml.safe_load(path.read_text())["groups"]
    assert sorted(doc["spec"]["groups"], key=lambda g: g["name"]) == sorted(
        groups, key=lambda g: g["name"]
    )


def test_runbook_base_is_a_parameter(gen, tmp_path):
    """The shipped links are relative to the repository; --runbook-base points every
    alert and its unit tests at a deployment's own copy of the runbooks."""
    assert not re.match(r"^[a-z]+://", gen.RUNBOOK_BASE) and gen.RUNBOOK_BASE.endswith(
        "docs/operations.md"
    )
    base = "https://wiki.example.com/ops/engagement-stream"
    out = gen.outputs(base)
    alerts = yaml.safe_load(out[gen.ALERTS_FILE])["groups"][0]["rules"]
    assert alerts and all(
        r["annotations"]["runbook_url"] == f"{base}#{r['alert'].lower()}" for r in alerts
    )
    for path in (gen.BUSINESS_TEST_FILE, gen.PIPELINE_TEST_FILE):
        for test in yaml.safe_load(out[path])["tests"]:
            for check in test["alert_rule_test"]:
                for exp in check["exp_alerts"]:
                    assert exp["exp_annotations"]["runbook_url"].startswith(base + "#")
    assert gen.outputs() != out
    # --check compares with the base given
    assert gen.main(["--check"]) == 0
    assert gen.main(["--check", "--runbook-base", base]) == 1

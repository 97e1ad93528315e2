"""Every PromQL expression the project ships, read from the committed files.

Lists each dashboard panel query (deploy/grafana/dashboards/*.json) and each recording and
alert rule expression (deploy/prometheus/rules/*.rules.yml), so that a test can evaluate them
all against a Prometheus scraping real workers and check that none errors or is empty.

    from deploy.queries import dashboard_queries, rule_expressions, all_queries
    for q in all_queries():
        run(q.promql())          # Grafana variables replaced by concrete values
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
RULES_DIR = DEPLOY / "prometheus" / "rules"

# Grafana's built-in variables that may appear in panel queries, with stand-in values.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$datasource": "prometheus",
}


@dataclass(frozen=True)
class Query:
    source: str  # "dashboard" or "recording" or "alert"
    file: str  # path relative to deploy/
    name: str  # panel title (with refId), recorded series or alert name
    expr: str

    def promql(self, variables: dict[str, str] | None = None) -> str:
        """The expression with Grafana variables replaced, ready for Prometheus' API."""
        out = self.expr
        for var, value in {**GRAFANA_VARIABLES, **(variables or {})}.items():
            out = out.replace(var, value)
        return out


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(directory: Path = DASHBOARDS_DIR) -> list[Query]:
    out = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in _panels(doc.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    name = f"{panel.get('title', '')} [{target.get('refId', '')}]"
                    out.append(
                        Query("dashboard", str(path.relative_to(DEPLOY)), name, target["expr"])
                    )
    return out


def rule_expressions(directory: Path = RULES_DIR) -> list[Query]:
    out = []
    for path in sorted(directory.glob("*.rules.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                kind = "alert" if "alert" in rule else "recording"
                name = rule.get("alert") or rule["record"]
                out.append(Query(kind, str(path.relative_to(DEPLOY)), name, rule["expr"]))
    return out


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_expressions()


if __name__ == "__main__":
    for q in all_queries():
        print(f"{q.source:9} {q.name}: {' '.join(q.promql().split())}")

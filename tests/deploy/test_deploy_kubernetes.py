"""Kubernetes manifests: built-in kinds against the Kubernetes schemas, CRDs by structure."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from conftest import DEPLOY

K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.34.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


DOCS = _docs()


def _kind(kind: str) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.mark.parametrize(
    "doc", [d for _, d in DOCS if d["kind"] not in CRD_KINDS], ids=lambda d: d["kind"]
)
def test_builtin_kinds_validate(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_probes_settings_and_port():
    dep = _kind("Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in c["ports"]
    refs = {next(iter(e)): next(iter(e.values()))["name"] for e in c["envFrom"]}
    assert refs == {
        "configMapRef": _kind("ConfigMap")["metadata"]["name"],
        "secretRef": _kind("Secret")["metadata"]["name"],
    }
    secret = _kind("Secret")["stringData"]
    assert "STREAM_REDIS_URL" in secret and "STREAM_KAFKA_SASL_PASSWORD" in secret
    config = _kind("ConfigMap")["data"]
    assert config["STREAM_METRICS_PORT"] == "9464"
    assert not {k for k in config if "PASSWORD" in k or k == "STREAM_REDIS_URL"}


def test_service_and_servicemonitor_select_the_workers():
    pod_labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    svc = _kind("Service")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    sm = _kind("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    ports = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in ports and ep["path"] == "/metrics"
    # The alerts match job="engagement-stream": the Service name is the job label.
    assert svc["metadata"]["name"] == "engagement-stream"


def test_prometheus_rule_structure():
    pr = _kind("PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert pr["metadata"]["name"]
    assert set(pr) == {"apiVersion", "kind", "metadata", "spec"}
    for group in pr["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule)
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
            assert isinstance(rule["expr"], str) and rule["expr"]

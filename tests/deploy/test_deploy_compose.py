"""docker-compose.yml: valid against the Compose specification, every mount present."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_compose_spec():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _bind_sources(service: dict) -> list[str]:
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source = vol.split(":", 1)[0]
            if source.startswith((".", "/")):
                out.append(source)
        elif vol.get("type") == "bind":
            out.append(vol["source"])
    return out


def test_every_mounted_file_exists(compose):
    checked = 0
    for name, service in compose["services"].items():
        for source in _bind_sources(service):
            assert not source.startswith("/"), f"{name}: absolute mount {source}"
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            checked += 1
        build = service.get("build")
        if build:
            if isinstance(build, str):
                build = {"context": build}
            context = ROOT / build.get("context", ".")
            dockerfile = build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).exists(), f"{name}: no {dockerfile}"
    for section in ("configs", "secrets"):
        for item in (compose.get(section) or {}).values():
            if "file" in item:
                assert (ROOT / item["file"]).exists(), item["file"]
    assert checked >= 5


def test_stack_shape(compose):
    s = compose["services"]
    kafka = s["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "--partitions" in s["kafka-init"]["command"][0]
    redis_cmd = " ".join(s["redis"]["command"])
    assert s["redis"]["image"].startswith("redis:7")
    assert "--appendonly yes" in redis_cmd and "--appendfsync everysec" in redis_cmd
    assert any(v.endswith(":/data") for v in s["redis"]["volumes"])
    assert s["worker"]["deploy"]["replicas"] == 2
    assert s["generator"]["profiles"] == ["demo"]
    assert s["generator"]["command"][0] == "generate"
    for name in ("kafka", "redis", "worker", "prometheus", "grafana"):
        assert "healthcheck" in s[name], name
    assert any("rules" in v for v in s["prometheus"]["volumes"])
    assert any("provisioning" in v for v in s["grafana"]["volumes"])


def test_scrape_config_targets_worker_service(compose):
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    sd = jobs["engagement-stream"]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == 9464
    assert "worker" in compose["services"]

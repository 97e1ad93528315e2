"""Shared helpers of the deployment tests (no network, no running services)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_module(relative: str) -> ModuleType:
    path = ROOT / relative
    name = "deploy_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    # Not a skip: CI must run these checks (scripts/install.sh installs Prometheus).
    assert path, "promtool not found on PATH: install the Debian 'prometheus' package"
    return path

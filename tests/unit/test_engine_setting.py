"""`STREAM_ENGINE` / `--engine`: `native` by default, `faust` with the faust extra, anything
else refused at start in one line; the native worker never imports faust."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.settings import SettingsError, load
from tests.support.workers import ROOT


def test_default_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_ENGINE", raising=False)
    assert load().engine == "native"


def test_faust_from_environment_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faust")
    monkeypatch.setenv("STREAM_ENGINE", "faust")
    assert load().engine == "faust"
    monkeypatch.setenv("STREAM_ENGINE", "native")
    assert load({"engine": "faust"}).engine == "faust"  # the flag wins


def test_unknown_engine_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_ENGINE", "flink")
    with pytest.raises(SettingsError, match=r"^bad setting STREAM_ENGINE: .*'native'.*'faust'"):
        load()
    out = subprocess.run([sys.executable, "-m", "stream", "worker", "--engine", "flink"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--engine" in out.stderr, out.stderr


def test_native_worker_does_not_import_faust() -> None:
    code = ("import sys, stream.app, stream.worker, stream.__main__; "
            "print(any(m == 'faust' or m.startswith('faust.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"

"""`STREAM_NO_EXTENSIONS`: one switch turns every compiled part off (none is even
imported) and the fold, the record reader and the store take their pure Python paths;
without it every built part is used; a value that is not a boolean is a bad setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stream.settings import Settings, SettingsError, load, no_extensions_requested
from tests.support.workers import ROOT

#: Run in a fresh interpreter: the switch is read when the package is imported.
PROBE = """
import json, sys
from stream import stages
from stream.kafka import fetched
from stream.store import store
print(json.dumps({
    "imported": sorted(m for m in sys.modules
                       if m in ("stream._fastfold", "stream.kafka._recordbatch",
                                 "stream.store._redisformats")),
    "fold": [stages.compiled_fold_available(), stages._fastfold is not None],
    "reader": [fetched.compiled_reader_available(), fetched._recordbatch is not None],
    "formats": [store.compiled_formats_available(), store._redisformats is not None],
}))
"""


def probe(value: str | None) -> dict[str, list[bool] | list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    if value is not None:
        env["STREAM_NO_EXTENSIONS"] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_the_switch_turns_every_compiled_part_off(value: str) -> None:
    got = probe(value)
    assert got["imported"] == []
    assert got["fold"] == [False, False]
    assert got["reader"] == [False, False]
    assert got["formats"] == [False, False]


@pytest.mark.parametrize("value", [None, "0", "false", ""])
def test_without_the_switch_every_built_part_is_used(value: str | None) -> None:
    got = probe(value)
    assert got["imported"] == ["stream._fastfold", "stream.kafka._recordbatch",
                                "stream.store._redisformats"]
    assert got["fold"] == [True, True]
    assert got["reader"] == [True, True]
    assert got["formats"] == [True, True]


@pytest.mark.parametrize("value", ["1", "0", "true", "False", "YES", "no", "on", "off", "t",
                                   "f", "y", "n", " 1 ", "maybe", "2", "disabled"])
def test_the_import_time_reading_agrees_with_the_setting(value: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The value read at import means what the validated setting means; one the setting
    refuses leaves the compiled parts on (and stops the program at start anyway)."""
    monkeypatch.setenv("STREAM_NO_EXTENSIONS", value)
    try:
        setting: bool | None = load().no_extensions
    except SettingsError as exc:
        assert str(exc).startswith("bad setting STREAM_NO_EXTENSIONS: ")
        setting = None
    assert no_extensions_requested({"STREAM_NO_EXTENSIONS": value}) is (setting is True)
    assert "no_extensions" in Settings.model_fields


def test_a_bad_value_stops_a_command_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update(PYTHONPATH=str(ROOT), STREAM_NO_EXTENSIONS="maybe",
               STREAM_REDIS_URL="redis://127.0.0.1:1/0")
    out = subprocess.run([sys.executable, "-m", "stream", "report"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "engagement-stream: bad setting STREAM_NO_EXTENSIONS: "), out.stderr
    assert "Traceback" not in out.stderr

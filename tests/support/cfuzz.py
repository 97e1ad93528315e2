"""Fuzz the compiled parsers under AddressSanitizer and UndefinedBehaviorSanitizer.

The C modules that read bytes from outside (`stream/_fastfold.c`: event JSON;
`stream/kafka/_recordbatch.c`: Kafka record batches) are built with gcc's
`-fsanitize=address,undefined` into a temporary directory, loaded into a Python process
that preloads the ASan runtime (CPython itself is not instrumented), and fed arbitrary and
mutated inputs: valid inputs cut at every length, bit flips, bytes replaced, lengths and
counts set to huge or negative values, random bytes, deeply nested and escaped JSON. A
sanitizer report aborts the process, which is the finding; so is any Python exception the
module is not documented to raise.

    python -m tests.support.cfuzz --seconds 600            # the long run (docs/reliability.md)
    python -m tests.support.cfuzz --seconds 20 --seed 1    # what the test suite runs
    python -m tests.support.cfuzz --canary asan           # proves a planted bug is caught

Another parser is one line in TARGETS: its source files, libraries and fuzz function.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g", "-O1"]
#: Planted bugs of --canary: a use after free (AddressSanitizer) or a signed overflow
#: (UndefinedBehaviorSanitizer), either of which a fuzzed parser could have.
CANARY_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
static PyObject *trip(PyObject *self, PyObject *arg) {
    long kind = PyLong_AsLong(arg);
    if (kind == 0) {
        char *p = malloc(8);
        p[0] = 1;
        free(p);
        return PyLong_FromLong(p[0]);
    }
    int big = (int)kind;
    return PyLong_FromLong(big + 2147483647);
}
static PyMethodDef methods[] = {{"trip", trip, METH_O, ""}, {NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_canary", NULL, -1, methods};
PyMODINIT_FUNC PyInit__canary(void) { return PyModule_Create(&mod); }
"""

# -- mutations ----------------------------------------------------------------------------

def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of `data`."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and buf:  # truncate
            del buf[rng.randrange(len(buf) + 1):]
        elif op == 1 and buf:  # bit flip
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 2 and buf:  # byte replaced by an interesting one
            buf[rng.randrange(len(buf))] = rng.choice(b'\x00\xff\x7f\x80"\\{}[],:0-.eEu')
        elif op == 3 and len(buf) >= 4:  # a 32-bit field set to a huge or negative value
            i = rng.randrange(len(buf) - 3)
            struct.pack_into(">i", buf, i, rng.choice(
                [0x7FFFFFFF, -1, -0x80000000, 0x10000000, len(buf), len(buf) + 1]))
        elif op == 4 and buf:  # a varint made long (Kafka records use zigzag varints)
            i = rng.randrange(len(buf))
            buf[i:i + 1] = bytes([0xFF] * rng.randint(1, 12))
        elif op == 5 and buf:  # a slice repeated
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.randint(1, 64))
            buf[i:i] = buf[i:j] * rng.randint(1, 8)
        elif op == 6 and buf:  # a slice deleted
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randint(1, 16)]
        else:  # random bytes inserted
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
    return bytes(buf)


# -- _fastfold: activity JSON ---------------------------------------------------------------

NOW_MS = 1_763_812_800_000  # 2025-11-22T12:00:00Z


def activity_seeds(rng: random.Random) -> list[bytes]:
    """Plain activity events in the shapes the compiled fold takes, and near misses."""
    ts: list[Any] = [NOW_MS - rng.randrange(40 * 86_400_000), "2025-11-22T10:00:00Z",
                     "2025-11-21T23:59:59.999999+05:30", "2025-11-22T10:00:00.1-00:00",
                     NOW_MS + 10 * 60_000, 0, -1, 2**63 - 1, 1.5, "2025-02-30T10:00:00Z"]
    users = ["u", "user-42", "é\u00fc", "a\"b", "\\", "x" * 256, "x" * 257, "\ud7ff", ""]
    out = []
    for _ in range(40):
        ev: dict[str, Any] = {"event_id": f"e{rng.randrange(10**6)}", "type": "activity",
                              "user_id": rng.choice(users), "ts": rng.choice(ts)}
        if rng.random() < 0.3:
            ev["props"] = {"plan": "pro", "k\\": "v\"", "n": rng.choice(["x", None, 1])}
        items = list(ev.items())
        rng.shuffle(items)
        text = json.dumps(dict(items), ensure_ascii=rng.random() < 0.5,
                          separators=rng.choice([(",", ":"), (", ", ": ")]))
        out.append(text.encode())
    out += [
        b'{"event_id":"e","type":"activ\\u0069ty","user_id":"u\\ud83d\\ude00","ts":1}',
        b'{"event_id":"e","type":"activity","user_id":"u","ts":1763812800000,"x":' +
        b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"event_id":"e","type":"activity","user_id":"u","ts":1763812800000,"x":' +
        b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}",
        b'{"event_id":"e","type":"activity","user_id":"' + b"\\\\" * 3000 + b'","ts":1}',
        b'{"event_id":"e","type":"activity","user_id":"\\u00","ts":1}',
        b'{"event_id":"e","type":"activity","user_id":"u","ts":"2025-11-22T10:00:00.' +
        b"9" * 5000 + b'Z"}',
        b'{"event_id":"e","type":"activity","user_id":"u","ts":' + b"9" * 400 + b"}",
    ]
    return out


def fuzz_fastfold(module: ModuleType, rng: random.Random, deadline: float) -> int:
    """Batches of mutated activity events through `fold_prepared` with `module` as the
    compiled fold (its Python caller builds the context exactly as the worker does)."""
    from stream import stages as fold_module
    from stream.decode import Prepared
    from stream.fold import FoldContext
    from stream.keys import KeySpace
    from stream.stages import fold_prepared
    from stream.timebuckets import DayMapper

    fold_module._fastfold = module  # type: ignore[attr-defined]
    seeds = activity_seeds(rng)
    spaces = [(KeySpace(), DayMapper("UTC")), (KeySpace(shards=4), DayMapper("Asia/Kolkata"))]
    tried = 0
    while time.monotonic() < deadline:
        values: list[bytes | None] = []
        for _ in range(rng.randint(1, 64)):
            pick = rng.random()
            if pick < 0.05:
                values.append(None)
            elif pick < 0.1:
                values.append(rng.randbytes(rng.randint(0, 200)))
            else:
                seed = rng.choice(seeds)
                values.append(seed if pick < 0.3 else mutate(rng, seed))
        offsets = list(range(100, 100 + len(values)))
        keys, days = rng.choice(spaces)
        applied = {("t/0", 0): rng.choice([-1, 99, 110, 10**6])}
        batch = Prepared(values, offsets, [("t/0", 0, len(values))], NOW_MS,
                         400 * 86_400_000)
        seen = {"u": days.day_of_ms(NOW_MS)} if rng.random() < 0.5 else {}
        if rng.random() < 0.5:  # the compiled table, as the worker passes it
            table = module.UserMap()
            table.update(seen)
            seen = table
        fold_prepared(batch, FoldContext(keys, days, days.day_of_ms(NOW_MS), applied, seen))
        # the user table itself, on the users the fold met (keys of every length)
        numbers = module.UserMap()
        users = [v.decode("utf-8", "replace") for v in values if v] + ["u" * 40]
        for n, user in enumerate(users):
            numbers[user] = n
        known, missing = module.split_known(users, numbers)
        assert len(known) == len(users) and not missing
        numbers.keep_newest(len(users) // 2)
        tried += len(values)
    return tried


# -- _recordbatch: Kafka record batches -----------------------------------------------------

def batch_seeds(rng: random.Random) -> list[bytes]:
    """Record sets made by aiokafka's own builder: keys, headers, null, empty and large
    values, gzip, several batches in a row."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    out = []
    for _ in range(30):
        data = b""
        for _ in range(rng.randint(1, 3)):
            codec = 1 if rng.random() < 0.15 else 0
            builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 10 * 1024 * 1024)
            for i in range(rng.randint(1, 12)):
                value = rng.choice([None, b"", b"v" * rng.randint(1, 300),
                                    rng.randbytes(rng.randint(1, 40))])
                builder.append(i * rng.randint(1, 3), timestamp=1_700_000_000_000 + i,
                               key=rng.choice([None, b"k"]), value=value,
                               headers=[("h", b"x")] if rng.random() < 0.3 else [])
            data += bytes(builder.build())
        out.append(data)
    return out


def fuzz_recordbatch(module: ModuleType, rng: random.Random, deadline: float) -> int:
    """Mutated record sets read from random positions with random limits."""
    seeds = batch_seeds(rng)
    tried = 0
    while time.monotonic() < deadline:
        seed = rng.choice(seeds)
        data = seed if rng.random() < 0.1 else (
            rng.randbytes(rng.randint(0, 300)) if rng.random() < 0.05 else mutate(rng, seed))
        pos = 0 if rng.random() < 0.8 else rng.randint(0, len(data))
        values: list[bytes | None] = []
        offsets: list[int] = []
        module.read(data, pos, rng.choice([0, 1, 5, -1, 2**62]), rng.choice([1, 3, 10**6]),
                    rng.random() < 0.5, values, offsets)
        tried += 1
    return tried


# -- compressed record batches: decompressed (stream/kafka/codecs.py), then the compiled reader ---

def compressed_seeds(rng: random.Random) -> list[bytes]:
    """Single record batches of every codec, made by aiokafka's own builder (which
    compresses with cramjam, as Kafka's clients do)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    out = []
    for _ in range(40):
        codec = rng.choice([1, 2, 3, 4])  # gzip, snappy, lz4, zstd
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 10 * 1024 * 1024)
        for i in range(rng.randint(1, 20)):
            value = rng.choice([None, b"", b'{"type":"activity"}' * rng.randint(1, 20),
                                rng.randbytes(rng.randint(1, 60))])
            builder.append(i, timestamp=1_700_000_000_000 + i, key=rng.choice([None, b"k"]),
                           value=value, headers=[("h", b"x")] if rng.random() < 0.3 else [])
        out.append(bytes(builder.build()))
    return out


def fuzz_compressed(module: ModuleType, rng: random.Random, deadline: float) -> int:
    """Compressed batches as the worker reads them: mutated before decompression (most
    then fail to decompress: that is `codecs.CodecError`, an unreadable batch, not a
    finding), or decompressed and then mutated, and the plain batch read by the
    sanitized reader with CRC checks off (the CRC covers the compressed bytes)."""
    from stream.kafka.codecs import CodecError, plain_batch

    seeds = compressed_seeds(rng)
    tried = 0
    while time.monotonic() < deadline:
        seed = rng.choice(seeds)
        try:
            if rng.random() < 0.5:
                plain = plain_batch(mutate(rng, seed))
            else:
                plain = mutate(rng, plain_batch(seed))
        except CodecError:
            tried += 1
            continue
        values: list[bytes | None] = []
        offsets: list[int] = []
        module.read(plain, 0, rng.choice([0, 5, 2**62]), rng.choice([1, 3, 10**6]), False,
                    values, offsets)
        tried += 1
    return tried


@dataclass(frozen=True)
class Target:
    sources: list[str]
    libraries: list[str]
    fuzz: Callable[[ModuleType, random.Random, float], int]
    #: the compiled module the sources build (default: the target's own name)
    module: str = ""


#: Module name -> how to build and fuzz it. Another parser is one more line.
TARGETS: dict[str, Target] = {
    "_fastfold": Target(["stream/_fastfold.c"], ["z"], fuzz_fastfold),
    "_recordbatch": Target(["stream/kafka/_recordbatch.c"], [], fuzz_recordbatch),
    "codecs": Target(["stream/kafka/_recordbatch.c"], [], fuzz_compressed, module="_recordbatch"),
}


# -- build and run ---------------------------------------------------------------------------

def asan_runtime() -> str:
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                         text=True, check=True).stdout.strip()
    if not os.path.isabs(out):
        raise RuntimeError("gcc has no AddressSanitizer runtime (libasan)")
    return out


def build(name: str, sources: list[str], libraries: list[str], into: Path) -> Path:
    """`name` built with the sanitizers into `into`; returns the shared object's path."""
    target = into / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = ["gcc", "-shared", "-fPIC", *SANITIZE, f"-I{sysconfig.get_paths()['include']}",
           *sources, *(f"-l{lib}" for lib in libraries), "-o", str(target)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return target


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(names: list[str], built: Path, seconds: float, seed: int) -> int:
    """In the sanitized process: fuzz each module for its share of `seconds`."""
    rng = random.Random(seed)
    for name in names:
        target = TARGETS[name]
        module = load(target.module or name,
                      built / (target.module or name) / (
                          (target.module or name) + sysconfig.get_config_var("EXT_SUFFIX")))
        tried = TARGETS[name].fuzz(module, rng, time.monotonic() + seconds / len(names))
        print(f"{name}: {tried} inputs, no finding", flush=True)
    return 0


def run(names: list[str], seconds: float, seed: int, canary: str | None = None) -> int:
    """Build, then fuzz in a child process with the ASan runtime preloaded; the child's
    exit code (non-zero: a finding, its report on stderr)."""
    with tempfile.TemporaryDirectory(prefix="cfuzz-") as tmp:
        into = Path(tmp)
        if canary:
            (into / "_canary.c").write_text(CANARY_C)
            build("_canary", [str(into / "_canary.c")], [], into)
        else:
            for name in names:
                # each target in a folder of its own: two may build the same module
                target = TARGETS[name]
                (into / (target.module or name)).mkdir(exist_ok=True)
                build(target.module or name, target.sources, target.libraries,
                      into / (target.module or name))
        env = {**os.environ, "LD_PRELOAD": asan_runtime(),
               # CPython frees little at exit; only memory errors are findings here.
               "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86",
               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
               "PYTHONPATH": str(ROOT)}
        args = ["--child", str(into), "--seconds", str(seconds), "--seed", str(seed)]
        args += ["--canary", canary] if canary else names
        return subprocess.run([sys.executable, "-m", "tests.support.cfuzz", *args],
                              env=env, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", default=list(TARGETS), help="modules to fuzz")
    p.add_argument("--seconds", type=float, default=60.0, help="total fuzzing time")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--canary", choices=["asan", "ubsan"],
                   help="fuzz nothing; trip a planted bug that sanitizer must catch")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(2**32)
    if a.child is not None:
        if a.canary:
            load("_canary", a.child / ("_canary" + sysconfig.get_config_var("EXT_SUFFIX"))
                 ).trip(0 if a.canary == "asan" else 1)
            return 0
        return child(a.names, a.child, a.seconds, seed)
    unknown = set(a.names) - set(TARGETS)
    if unknown:
        p.error(f"unknown module(s) {sorted(unknown)}; known: {sorted(TARGETS)}")
    print(f"seed {seed}", flush=True)
    return run(a.names, a.seconds, seed, a.canary)


if __name__ == "__main__":
    sys.exit(main())

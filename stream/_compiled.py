"""Which compiled parts the worker uses, decided in this one place.

The compiled parts are twins of pure Python code, faster and giving the same results:
`_fastfold` (decode and fold of plain activity messages, the twin of `decode.py` and
`fold.py` fused, called by `stages.py`; and the compact per-user table of `usermap.py`),
`_recordbatch` (Kafka record batches read at once, beside `kafka/fetched.py`) and
`_redisformats` (HyperLogLogs and bitmap fragments in Redis's own formats, and the
store's command packing, beside `store/store.py`). Each is used when it was built at
install and imports, unless `STREAM_NO_EXTENSIONS=1` turns them all off, as aiokafka's
`AIOKAFKA_NO_EXTENSIONS` does for its own: the pure Python paths are the definition of
every figure, and the switch runs them end to end (CI runs the end-to-end figure tests
both ways).

Why the switch is read at import: a module is chosen once, when `stages`, `fetched` and
`store` are imported, before any command has built its settings. The environment is
still read by `stream/settings.py` alone: it owns the name (`NO_EXTENSIONS_VARIABLE`),
reads it (`no_extensions_requested`) and validates the same value as
`Settings.no_extensions` at start, so a bad value stops the program in one line. The
compiled parts of the libraries underneath (aiokafka's, hiredis) keep their own switches.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .settings import NO_EXTENSIONS_VARIABLE, no_extensions_requested

#: True when `STREAM_NO_EXTENSIONS` turned every compiled part off.
DISABLED = no_extensions_requested()



def _load(name: str) -> ModuleType | None:
    """The compiled module `stream.<name>`, or None when it is off or was not built
    (`pip install` builds it when a C compiler, and for the fold zlib's headers, are
    present)."""
    if DISABLED:
        return None  # never imported at all
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        return None


fastfold = _load("_fastfold")
recordbatch = _load("kafka._recordbatch")
redisformats = _load("store._redisformats")

#: Each compiled part's source and what it speeds up, for the worker's start-up line.
PARTS = {
    "stream/_fastfold.c": "the fold of activity messages, the per-user tables",
    "stream/kafka/_recordbatch.c": "Kafka record reading",
    "stream/store/_redisformats.c": "HyperLogLogs, bitmaps, command packing",
}


def status() -> dict[str, bool]:
    """Each compiled part's source -> whether the worker uses it."""
    return {"stream/_fastfold.c": fastfold is not None,
            "stream/kafka/_recordbatch.c": recordbatch is not None,
            "stream/store/_redisformats.c": redisformats is not None}


def unused_parts_warning() -> str | None:
    """One line on the compiled parts the worker goes without, or None when it has all."""
    if DISABLED:
        return (f"{NO_EXTENSIONS_VARIABLE} is set: every compiled part is off and the pure "
                "Python paths do all the work, several times slower")
    missing = [f"{src} ({what})" for src, what in PARTS.items() if not status()[src]]
    if not missing:
        return None
    return (f"not built: {', '.join(missing)}; the pure Python paths do the same work "
            "several times slower. Reinstall with a C compiler and zlib's headers")

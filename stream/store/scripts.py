"""The one registry of the store's Lua scripts (lua/*.lua): loaded and called only here.

Every script is called by its SHA-1 (EVALSHA), computed here from its text, so a call
costs no more than the command itself. A Redis restarted, flushed (SCRIPT FLUSH) or
failed over while the worker runs answers NOSCRIPT: the registry loads the scripts
again and repeats the call, for a direct call and for a pipeline alike, on a plain
client and on a cluster client (whose SCRIPT LOAD reaches every primary).

Scripts are assembled at load time:
1. `--@include <fragment>.lua` lines are replaced by the fragment (files `lua/_*.lua`):
   one definition of the logic several scripts share (claiming an event id, a
   customer's churn steps), so what `forget` takes out is what `apply` put in, and a
   claim in its own script decides as one inside the apply script;
2. a prelude names the key suffixes (table `K`, from stream/keys.py) and the counter
   fields the scripts read or write (table `F`, from stream/store/wire.py), so no script
   spells a key or field name that the Python code also spells.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import redis
import redis.cluster

from ..keys import lua_prelude as key_names
from .wire import lua_prelude as field_names

#: Every script of lua/ (fragments `_*.lua` are parts of these, never called alone).
NAMES: tuple[str, ...] = ("apply", "claim", "hll", "campaigns", "cohort", "firstweek",
                          "segments", "offsets", "scan", "sweep", "forget")
#: The scripts a store's batches and reads call in pipelines: loaded up front by
#: `Store.load_scripts` (and again all at once on NOSCRIPT in a pipeline).
PIPELINED: tuple[str, ...] = ("apply", "claim", "firstweek", "hll", "campaigns", "cohort")

_INCLUDE = re.compile(r"^--@include (_\w+\.lua)\n", re.M)

Client = redis.Redis | redis.cluster.RedisCluster


def _lua(name: str) -> str:
    return importlib.resources.files("stream.store").joinpath("lua", name).read_text()


@cache
def source(name: str) -> str:
    """The text of script `name` as Redis receives it: prelude, then the file with its
    fragments put in."""
    if name not in NAMES:
        raise KeyError(f"no Lua script {name!r}")
    body = _INCLUDE.sub(lambda m: _lua(m[1]), _lua(f"{name}.lua"))
    if _INCLUDE.search(body):
        raise RuntimeError(f"lua/{name}.lua includes a fragment that is not lua/_*.lua")
    return key_names() + field_names() + body


@cache
def sha(name: str) -> str:
    """The SHA-1 Redis files script `name` under (SCRIPT LOAD answers the same)."""
    return hashlib.sha1(source(name).encode()).hexdigest()


class Scripts:
    """The scripts of one client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        #: whether `load` ran (the store's readers load before their first pipeline)
        self.loaded = False

    def load(self, names: Sequence[str] = PIPELINED) -> None:
        """SCRIPT LOAD `names` (on every primary in cluster mode: RedisCluster sends it
        to each by itself; a replica promoted later answers NOSCRIPT, see `execute`)."""
        for name in names:
            self.client.script_load(source(name))
        self.loaded = True

    def call(self, name: str, keys: Sequence[str], *args: Any) -> Any:
        """Run script `name` now. The raw EVALSHA, which both clients route by its first
        key (every key of a call shares one hash tag); on NOSCRIPT the script is loaded
        and the call repeated, as redis-py's registered scripts do."""
        command = ("EVALSHA", sha(name), len(keys), *keys, *args)
        try:
            return self.client.execute_command(*command)  # type: ignore[no-untyped-call]
        except redis.exceptions.NoScriptError:
            self.client.script_load(source(name))
            return self.client.execute_command(*command)  # type: ignore[no-untyped-call]

    @staticmethod
    def queue(pipe: Any, name: str, key: str, *args: Any) -> None:
        """Queue script `name` with one key on `pipe`. The raw command, because
        RedisCluster's pipeline blocks its `evalsha` method; it routes the raw command to
        the key's slot all the same."""
        pipe.execute_command("EVALSHA", sha(name), 1, key, *args)

    def execute(self, pipe: Replayable) -> list[Any]:
        """Run a pipeline; on NOSCRIPT (Redis restarted or failed over) reload and rerun.

        Rerunning is safe for the store's pipelines: PFADD is idempotent and an apply
        call that already ran fails its offset compare-and-set instead of applying
        twice."""
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            self.load()
            return pipe.execute()


class Replayable:
    """Records pipeline calls and runs them in a fresh pipeline on each `execute`, so a
    batch can be sent again after NOSCRIPT (redis-py empties a pipeline once executed,
    so rerunning the same pipeline object would silently send nothing)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self._calls.append((name, args))
        return record

    def execute(self) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for name, args in self._calls:
            getattr(pipe, name)(*args)
        return list(pipe.execute())

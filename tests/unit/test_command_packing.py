"""The store's compiled command packer (stream/store/_redisformats.c `pack_command`,
behind `store.CompiledPacker`) writes exactly what redis-py's own packer writes, for any
command; the commands it leaves to redis-py are still packed, by redis-py."""

from __future__ import annotations

from typing import Any

import pytest
import redis.connection
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import _compiled
from stream.store.store import CompiledPacker

needs_extension = pytest.mark.skipif(_compiled.redisformats is None,
                                     reason="the compiled formats were not built")

_plain = st.one_of(st.binary(max_size=40), st.text(max_size=40),
                   st.integers(-(2**70), 2**70))
_other = st.one_of(st.floats(allow_nan=False), st.booleans(),
                   st.binary(max_size=8).map(memoryview), st.binary(max_size=8).map(bytearray),
                   st.just("bad \udc80 utf-8"))
_name = st.sampled_from(["PFADD", "EVALSHA", b"SET", "CLIENT SETNAME", b"CONFIG GET"])


def _redis_py(args: tuple[Any, ...]) -> list[bytes]:
    packed: list[bytes] = redis.connection.HiredisRespSerializer().pack(*args)
    return packed


@needs_extension
@settings(max_examples=500, deadline=None)
@given(_name, st.lists(st.one_of(_plain, _plain, _other), max_size=12))
def test_commands_are_packed_as_redis_py_packs_them(name: Any, rest: list[Any]) -> None:
    args = (name, *rest)
    try:
        expected = b"".join(_redis_py(args))
    except Exception as exc:  # redis-py refuses it (a str that is not UTF-8): so do we
        with pytest.raises(type(exc)):
            CompiledPacker().pack(*args)
        return
    assert b"".join(CompiledPacker().pack(*args)) == expected


@needs_extension
def test_plain_commands_take_the_compiled_path() -> None:
    rf = _compiled.redisformats
    assert rf is not None
    assert rf.pack_command(("PFADD", "{h}d:1", "u1", b"u2", 7, -8)) == (
        b"*6\r\n$5\r\nPFADD\r\n$6\r\n{h}d:1\r\n$2\r\nu1\r\n$2\r\nu2\r\n$1\r\n7\r\n"
        b"$2\r\n-8\r\n")
    assert rf.pack_command(("SET", "k", 1.5)) is None  # redis-py's
    assert rf.pack_command(("CLIENT SETNAME", "w")) is None  # split by redis-py

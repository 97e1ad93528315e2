"""stream/usermap.py: the compiled user table (stream/_fastfold.c's UserMap) behaves as
its twin, a dict, under any sequence of the operations the worker's caches use."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import _compiled, usermap

needs_extension = pytest.mark.skipif(_compiled.fastfold is None,
                                     reason="the compiled fold was not built")

# short keys live in the slot, longer ones (over 16 bytes of UTF-8) in the arena
_keys = st.one_of(st.sampled_from(["u1", "u2", "", "ü" * 8, "x" * 16, "x" * 17]),
                  st.text(min_size=0, max_size=40))
_values = st.integers(-(2**63), 2**63 - 1)
_ops = st.lists(st.one_of(
    st.tuples(st.just("set"), _keys, _values),
    st.tuples(st.just("update"), st.dictionaries(_keys, _values, max_size=8)),
    st.tuples(st.just("flat"), st.lists(st.tuples(_keys, st.integers(0, 10**17)),
                                        max_size=8), st.booleans()),
    st.tuples(st.just("keep"), st.integers(0, 12)),
    st.tuples(st.just("clear")),
), max_size=60)


def _apply(table: Any, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "set":
        table[op[1]] = op[2]
    elif kind == "update":  # the batch's new (user, day) pairs into `seen`
        table.update(op[1])
    elif kind == "flat":  # a script's reply: flat, as bytes (or str), numbers decimal
        flat: list[Any] = []
        for k, v in op[1]:
            flat += (k.encode(), str(v).encode()) if op[2] else (k, str(v))
        top = usermap.add_flat(table, flat)
        assert top == max((v for _, v in op[1]), default=-1)
    elif kind == "keep":
        usermap.keep_newest(table, op[1])
    else:
        table.clear()


@needs_extension
@settings(max_examples=300, deadline=None)
@given(_ops, st.lists(_keys, max_size=20))
def test_the_table_behaves_as_a_dict(ops: list[tuple[Any, ...]], probes: list[str]) -> None:
    table = _compiled.fastfold.UserMap()
    twin: dict[str, int] = {}
    for op in ops:
        _apply(table, op)
        _apply(twin, op)
        assert len(table) == len(twin)
    for key in [*twin, *probes, "never-set"]:
        assert (key in table) == (key in twin)
        assert table.get(key) == twin.get(key)
        assert table.get(key, -7) == twin.get(key, -7)
        if key in twin:
            assert table[key] == twin[key]
    users = [*twin, *probes]
    assert usermap.split_known(users, table) == (
        [twin[u] for u in users if u in twin], [u for u in users if u not in twin])


@needs_extension
def test_a_large_table_keeps_the_newest_entries() -> None:
    """Growth well past the first allocation, then halving as the store's number cache
    does past its limit: the later half stays, with its values."""
    table = _compiled.fastfold.UserMap()
    n = 50_000
    for i in range(n):
        table[f"user-{i:06d}-{'long' * (i % 3)}"] = i
    assert len(table) == n
    usermap.keep_newest(table, n // 2)
    assert len(table) == n // 2
    assert all(table.get(f"user-{i:06d}-{'long' * (i % 3)}") == (i if i >= n // 2 else None)
               for i in range(n))


@needs_extension
def test_bad_keys_and_values_are_refused() -> None:
    table = _compiled.fastfold.UserMap()
    with pytest.raises(TypeError):
        table[b"bytes"] = 1  # type: ignore[index]
    with pytest.raises(ValueError):
        table.update({"u": "12a"})
    with pytest.raises(TypeError):
        table.update([("u",)])
    with pytest.raises(TypeError):
        del table["u"]
    with pytest.raises(KeyError):
        table["missing"]
    assert len(table) == 0 and 1 not in table


def test_the_twin_is_a_dict_without_the_compiled_parts(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(_compiled, "fastfold", None)
    table = usermap.new_table()
    assert isinstance(table, dict)
    assert usermap.add_flat(table, ["a", "5", "b", "7"]) == 7
    assert usermap.split_known(["a", "c", "b"], table) == ([5, 7], ["c"])

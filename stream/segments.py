"""Segments: figures split by a low-cardinality event property (`STREAM_SEGMENTS`).

A segment is a (dimension, value) pair: the dimension names a key of the event's `props`
(`plan`, `platform`, `country` ...), the value is the property's value. Prometheus
cardinality must stay bounded whatever the input, so each dimension has a registry of at
most `max_values` values in Redis (`P:{h}:seg:<dim>`, a set): the first `max_values`
distinct values folded win, every later one counts under `other`. Two more values are
reserved: `none` for an event without the property (or with an empty or over-long one),
and `other`. A real value spelled `none` or `other` joins those buckets.

Pure except for `Segments.resolve`, which the store calls with a Redis client: the worker
caches the registry and asks Redis only for values it has not seen while the registry is
not full, so at most `max_values + 1` round trips per dimension over a worker's life.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

NONE: Final = "none"
OTHER: Final = "other"
#: Longer property values are never registered: they count under `other`.
MAX_VALUE_CHARS: Final = 64


class Segments:
    """The configured dimensions and the worker's cache of their registries.

    `mapping[i]` maps a raw value of dimension `dims[i]` to its segment value (itself when
    registered, `other` when refused); `full[i]` is True once the registry holds
    `max_values` values, after which an unknown value maps to `other` without asking."""

    __slots__ = ("dims", "full", "mapping", "max_values")

    def __init__(self, dims: Iterable[str], max_values: int = 20) -> None:
        self.dims: tuple[str, ...] = tuple(dims)
        self.max_values = max_values
        # a missing or empty property is `none`; the reserved names map to themselves
        self.mapping: list[dict[str | None, str]] = [
            {None: NONE, "": NONE, NONE: NONE, OTHER: OTHER} for _ in self.dims]
        self.full: list[bool] = [False] * len(self.dims)

    def __bool__(self) -> bool:
        return bool(self.dims)

    def lookup(self, i: int, raw: str | None) -> str | None:
        """Segment value of raw value `raw` of dimension `dims[i]`, or None when only the
        registry in Redis can tell (`resolve`)."""
        got = self.mapping[i].get(raw)
        if got is None and raw is not None and (self.full[i] or len(raw) > MAX_VALUE_CHARS):
            return OTHER
        return got

    def resolve(self, pending: Iterable[tuple[int, str | None]],
                register: Callable[[list[str], int, list[str]], list[list[str]]]) -> None:
        """Ask the registry about `pending` (dimension index, raw value) pairs, in the
        order they were met. `register(dims, max_values, flat)` runs lua/segments.lua and
        returns, per dimension of `dims`, its registry after the call."""
        dims: list[str] = []
        flat: list[str] = []
        for i, raw in pending:
            if raw is not None and self.lookup(i, raw) is None:
                flat += (self.dims[i], raw)
                if self.dims[i] not in dims:
                    dims.append(self.dims[i])
        if not flat:
            return
        for dim, members in zip(dims, register(dims, self.max_values, flat), strict=True):
            self.learn(self.dims.index(dim), members)
        for i, raw in pending:  # refused values: `other`, cached only while bounded
            if self.lookup(i, raw) is None:
                self.full[i] = True

    def learn(self, i: int, members: Iterable[str]) -> None:
        """Record the registry of dimension `dims[i]` as read from Redis."""
        members = list(members)
        known = self.mapping[i]
        for m in members:
            known[m] = m
        self.full[i] = len(members) >= self.max_values

    def values(self, i: int) -> list[str]:
        """Every segment value dimension `dims[i]` can have, as far as this cache knows."""
        return sorted(set(self.mapping[i].values()))


def parse_dims(text: str) -> tuple[str, ...]:
    """`plan, platform,country` -> ("plan", "platform", "country") (duplicates dropped)."""
    out: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)

"""The worker's per-user caches: a user id (str) -> an int.

Two caches are looked up once or twice per event: the worker's `seen` (a user -> a day
whose activity of the user is in Redis) and the store's bit numbers (a user -> its number
in the shard). With hundreds of thousands of users a dict lookup there costs several
cache misses; the compiled `UserMap` (stream/_fastfold.c) keeps each entry in one slot of
a flat table and is the one used when the compiled fold is. A plain dict is its twin and
the definition: the caches use only what both offer (len, in, [], get, []=, update
from a dict, clear, and `add_flat` and `keep_newest` below).
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from . import _compiled


class UserTable(Protocol):
    """What the caches use of a dict (and UserMap offers)."""

    def __len__(self) -> int: ...

    def __contains__(self, key: object, /) -> bool: ...

    def __getitem__(self, key: str, /) -> int: ...

    def __setitem__(self, key: str, value: int, /) -> None: ...

    def get(self, key: str, default: Any = None, /) -> Any: ...

    def update(self, other: dict[str, int], /) -> None: ...

    def clear(self) -> None: ...


def new_table() -> UserTable:
    """A UserMap when the compiled fold is in use, else a dict."""
    fastfold = _compiled.fastfold
    table: UserTable = fastfold.UserMap() if fastfold is not None else {}
    return table


def plain_table() -> UserTable:
    """An empty dict, typed as a table (the twin, whatever is compiled)."""
    table: dict[str, int] = {}
    return table


def add_flat(table: UserTable, flat: list[Any]) -> int:
    """Add a script's reply of numbers, `[user, number, user, number, ...]` as the client
    gives it (bytes, or str with decode_responses), to `table`; the highest number added
    (-1: none)."""
    if isinstance(table, dict):
        top = -1
        for i in range(0, len(flat), 2):
            user, number = flat[i], int(flat[i + 1])
            table[user.decode() if isinstance(user, bytes) else str(user)] = number
            top = max(top, number)
        return top
    added: int = table.add_flat(flat)  # type: ignore[attr-defined]
    return added


def keep_newest(table: UserTable, keep: int) -> None:
    """Keep the `keep` entries inserted last (a dict keeps insertion order: its first
    keys go)."""
    if isinstance(table, dict):
        for user in list(itertools.islice(table, max(0, len(table) - keep))):
            del table[user]
    else:
        table.keep_newest(keep)  # type: ignore[attr-defined]


def split_known(users: list[str], numbers: UserTable) -> tuple[list[int], list[str]]:
    """(the numbers of `users` that `numbers` holds, in order; the users it lacks)."""
    fastfold = _compiled.fastfold
    if fastfold is not None:
        known, missing = fastfold.split_known(users, numbers)
        return known, missing
    got = [numbers.get(user) for user in users]
    return ([n for n in got if n is not None],
            [user for user, n in zip(users, got, strict=True) if n is None])

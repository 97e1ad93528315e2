"""Types of the optional compiled fold (stream/_fastfold.c)."""

from typing import Any

def fold_activity(
    values: list[bytes | None],
    offsets: list[int],
    start: int,
    stop: int,
    ceiling: int,
    ctx: tuple[Any, ...],
    shape: int = 0,
) -> tuple[list[int], list[int], list[list[int]]]: ...

"""The faust engine's agent turns a batch of faust events into the worker's runs: one
run per stretch of one partition, each message's raw value and offset kept in order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("faust")

from stream.engines.faust import _runs_of


def event(topic: str, partition: int, offset: int, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition,
                                                   offset=offset, value=value))


def test_runs_keep_partition_offset_and_value() -> None:
    events = [event("a", 0, 5, b"x"), event("a", 0, 6, None), event("a", 1, 2, b"y"),
              event("b", 1, 9, b"z"), event("a", 0, 7, b"w")]
    assert _runs_of(events) == [("a", 0, [b"x", None], [5, 6]), ("a", 1, [b"y"], [2]),
                                ("b", 1, [b"z"], [9]), ("a", 0, [b"w"], [7])]
    assert _runs_of([]) == []

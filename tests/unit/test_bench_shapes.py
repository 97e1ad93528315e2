"""The benchmark's event shapes (benchmarks/run.py `--shapes`) are what they claim to be:
every message a valid event by the oracle's reading of the contract, the shuffled shape
the same events with the same times in another order, 5-10 props, a fifth of the mixed
stream of other types. A shape that silently produced dead letters or the wrong mix would
make its ratio meaningless."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from benchmarks.run import activity_events
from tests.support import oracle

N, USERS, DAYS = 4000, 500, 30
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_MS = oracle.to_ms(NOW)


def _events(shape: str) -> list[oracle.Event]:
    out = []
    for key, value in activity_events(N, USERS, DAYS, NOW_MS, shape=shape):
        checked = oracle.check(value, NOW)
        assert checked.event is not None, (checked.reason, checked.detail, value)
        assert key == checked.event.user_id.encode()  # keyed by user, as producers do
        out.append(checked.event)
    return out


@pytest.mark.parametrize("shape", ["ordered", "shuffled", "props", "mixed"])
def test_every_message_is_a_valid_event_of_the_window(shape: str) -> None:
    events = _events(shape)
    assert len({e.event_id for e in events}) == N
    first_day = NOW_MS // 86_400_000 - (DAYS - 1)
    assert all(first_day * 86_400_000 <= e.ts_ms <= NOW_MS for e in events)


def test_ordered_times_are_in_order_and_shuffled_are_the_same_times_out_of_order() -> None:
    ordered, shuffled = _events("ordered"), _events("shuffled")
    # to the second: a `ts` with an offset is written without its milliseconds
    times = [e.ts_ms // 1000 for e in ordered]
    assert times == sorted(times)
    assert [(e.event_id, e.user_id) for e in shuffled] == [
        (e.event_id, e.user_id) for e in ordered]
    assert sorted(e.ts_ms // 1000 for e in shuffled) == times
    # out of order across the whole month, not locally: the first tenth spans most days
    first = [e.ts_ms // 86_400_000 for e in shuffled[: N // 10]]
    assert max(first) - min(first) >= DAYS - 3
    descents = sum(a.ts_ms > b.ts_ms for a, b in pairwise(shuffled))
    assert descents > N // 3


def test_props_shape_has_five_to_ten_props() -> None:
    counts = Counter(len(e.props) for e in _events("props"))
    assert set(counts) <= set(range(5, 11))
    assert counts[5] and counts[10]


def test_mixed_shape_is_four_fifths_activity_and_every_other_type() -> None:
    types = Counter(e.type for e in _events("mixed"))
    assert 0.77 <= types["activity"] / N <= 0.83
    assert set(types) == {"activity", "visit", "conversion", "signup", "cancellation",
                          "survey"}

"""Days-active distribution and lifecycle (the user scan, lua/scan.lua) against a real
redis-server and the brute-force oracle, with activity on the edges of every window."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.demo.localservers import RedisServer
from stream.figures import compute
from stream.store import scan
from stream.timebuckets import DayMapper, ms
from tests.integration.test_store_lua import NOW, apply_all, make_store
from tests.support import oracle

NAMES = ("days_active_users", "lifecycle_users", "previous_day_days_active_users",
         "previous_day_lifecycle_users")
#: Day offsets on the edges of the 7- and 30-day windows, of yesterday's, and of the
#: lifecycle horizon (45 days before today or yesterday), and beyond the bitmap.
_DAYS = st.sampled_from([0, -1, -2, -5, -6, -7, -8, -28, -29, -30, -31, -32, -44, -45,
                         -46, -47, -48, -60])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@st.composite
def activity(draw: st.DrawFn) -> list[bytes]:
    users = [f"user-{i}" for i in range(draw(st.integers(1, 8)))]
    out = []
    for i in range(draw(st.integers(1, 60))):
        day = draw(_DAYS)
        ts = NOW + timedelta(days=day, hours=draw(st.sampled_from([-12, 0, 11])))
        out.append(json.dumps({"event_id": f"a{i}", "type": "activity", "ts": ms(ts),
                               "user_id": draw(st.sampled_from(users))}).encode())
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example])
@given(activity(), st.randoms(use_true_random=False))
def test_scan_matches_oracle(redis_url: str, values: list[bytes], rnd: random.Random) -> None:
    store = make_store(redis_url)
    try:
        order = apply_all(store, values, rnd)
        today = DayMapper("UTC").today(NOW)
        scan.scan_and_save(store, today)
        got = compute(store.read(today, previous=True))
        want = oracle.activity_figures(order, NOW)
        assert {n: got[n] for n in NAMES} == want
        assert sum(got["days_active_users"]["30d"].values()) == len(
            {e.user_id for e in oracle.run(order, NOW).folded
             if 0 <= today - DayMapper("UTC").day_of_ms(e.ts_ms) < 30})
        assert got["days_active_computed_timestamp_seconds"] > 0
    finally:
        store.close()


def test_scan_of_another_day_is_not_exported(redis_url: str) -> None:
    store = make_store(redis_url)
    today = DayMapper("UTC").today(NOW)
    scan.scan_and_save(store, today - 1)
    assert "days_active_users" not in compute(store.read(today))
    assert scan.next_interval(0.01) == scan.MIN_INTERVAL
    assert scan.next_interval(10.0) == 200.0
    store.close()

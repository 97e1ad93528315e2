"""Segments (STREAM_SEGMENTS) against a real redis-server and the brute-force oracle.

Random histories whose events carry `props` from more values than the registry's limit,
no props, empty or reserved values, applied in random batch interleavings with
redeliveries: every segment figure must equal the oracle's (unique counts within 3%), the
registry must hold the first values folded, and the unsegmented figures stay the same.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.demo.localservers import RedisServer
from stream.figures import compute
from stream.keys import KeySpace
from stream.segments import Segments
from stream.store.store import Store, StoreParams, connect
from stream.timebuckets import DayMapper, ms
from tests.integration.test_store_lua import NOW, apply_all, assert_matches
from tests.support import oracle
from tests.support.direct import fold_messages

DIMS = ("plan", "country")
LIMIT = 3


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def make_store(url: str, shards: int = 1) -> Store:
    client = connect(url, cluster=False)
    client.flushall()
    keys = KeySpace(shards=shards, buckets=8)
    store = Store(client, keys, StoreParams("UTC", shards, 8), segments=Segments(DIMS, LIMIT))
    store.load_scripts()
    store.check_meta()
    return store


_DAYS = st.sampled_from([0, -1, -6, -7, -8, -28, -29, -30, -31, -45, -60])
_PLANS = st.sampled_from(["free", "pro", "team", "biz", "edu", "none", "other", ""])
_COUNTRIES = st.sampled_from(["de", "fr", "us", "x" * 70])


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    users = [f"user-{i}" for i in range(draw(st.integers(1, 6)))]
    out: list[bytes] = []
    n = draw(st.integers(1, 50))
    for i in range(n):
        kind = draw(st.sampled_from(["activity", "activity", "signup", "signup",
                                     "cancellation", "visit", "conversion", "survey"]))
        ts = NOW + timedelta(days=draw(_DAYS), hours=draw(st.sampled_from([-12, -1, 0, 11])))
        ev: dict[str, Any] = {"event_id": f"e{i}", "type": kind, "ts": ms(ts),
                              "user_id": draw(st.sampled_from(users))}
        props: dict[str, str] = {}
        if draw(st.booleans()):
            props["plan"] = draw(_PLANS)
        if draw(st.booleans()):
            props["country"] = draw(_COUNTRIES)
        if props or draw(st.booleans()):
            ev["props"] = props
        if kind in ("visit", "conversion"):
            ev["campaign"] = "a"
        if kind == "survey":
            survey = draw(st.sampled_from(["nps", "csat"]))
            ev["survey"] = survey
            ev["score"] = draw(st.integers(0, 10) if survey == "nps" else st.integers(1, 5))
        out.append(json.dumps(ev).encode())
    for _ in range(draw(st.integers(0, 4))):  # repeats, sometimes with other props
        again = json.loads(out[draw(st.integers(0, n - 1))])
        again["props"] = {"plan": draw(_PLANS)}
        out.append(json.dumps(again).encode())
    return out


def _segment_part(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k.startswith("segment_")}


def assert_segments_match(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for name, dims in want.items():
        assert set(got[name]) == set(dims), name
        for dim, per in dims.items():
            assert set(got[name][dim]) == set(per), (name, dim, got[name][dim], per)
            for v, value in per.items():
                if name in oracle.SEGMENT_UNIQUE:
                    assert got[name][dim][v] == pytest.approx(value, rel=0.03, abs=0.02)
                else:
                    assert got[name][dim][v] == pytest.approx(value, abs=1e-9), (name, dim, v)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example])
@given(histories(), st.randoms(use_true_random=False))
def test_segment_figures_match_oracle(redis_url: str, values: list[bytes],
                                      rnd: random.Random) -> None:
    store = make_store(redis_url)
    try:
        order = apply_all(store, values, rnd)
        today = DayMapper("UTC").today(NOW)
        got = compute(store.read(today))
        want = oracle.segment_figures(order, NOW, DIMS, LIMIT)
        assert_segments_match(_segment_part(got), want)
        # the registry holds the first values folded, never more than the limit
        registry = oracle.segment_registry(oracle.run(order, NOW).accepted, DIMS, LIMIT)
        for dim in DIMS:
            stored = {m.decode() for m in store.client.smembers(store.keys.seg_registry(dim))}
            assert stored == set(registry[dim])
        # segments change no unsegmented figure
        base = {k: v for k, v in got.items() if not k.startswith("segment_")}
        assert_matches(base, oracle.compute_figures(order, NOW))
    finally:
        store.close()


def test_segments_over_shards_and_a_fresh_worker_cache(redis_url: str) -> None:
    """Two shards (ids claimed across shards), and a second worker whose registry cache
    starts empty while the registry is full: every later value is `other`."""
    store = make_store(redis_url, shards=2)
    rnd = random.Random(7)
    values = []
    for i in range(300):
        kind = rnd.choice(["activity", "signup", "cancellation", "visit", "conversion"])
        ev: dict[str, Any] = {"event_id": f"e{i}", "type": kind, "user_id": f"u{i % 40}",
                              "ts": ms(NOW - timedelta(days=rnd.randrange(45), hours=1)),
                              "props": {"plan": f"p{rnd.randrange(6)}"}}
        if kind in ("visit", "conversion"):
            ev["campaign"] = "a"
        values.append(json.dumps(ev).encode())
    msgs = [("a", None, v) for v in values[:150]]
    order = fold_messages(store, msgs, NOW, "UTC", batch=40)
    second = Store(store.client, KeySpace(shards=2, buckets=8), store.params,
                   segments=Segments(DIMS, LIMIT))
    second.load_scripts()
    order += fold_messages(second, [("b", None, v) for v in values[150:]], NOW, "UTC", batch=40)
    today = DayMapper("UTC").today(NOW)
    got = _segment_part(compute(store.read(today)))
    assert_segments_match(got, oracle.segment_figures(order, NOW, DIMS, LIMIT))
    assert set(got["segment_monthly_active_users"]["plan"]) <= {
        "none", "other", *(f"p{i}" for i in range(6))}
    assert len(got["segment_monthly_active_users"]["plan"]) == LIMIT + 2
    store.close()


def test_sweep_folds_old_segment_fields_and_keeps_figures(redis_url: str) -> None:
    from stream.store.sweep import sweep

    store = make_store(redis_url)
    values = []
    for i in range(30):
        values.append(json.dumps({"event_id": f"s{i}", "type": "signup", "user_id": f"c{i}",
                                  "ts": ms(NOW - timedelta(days=200 - i)),
                                  "props": {"plan": ["free", "pro"][i % 2]}}).encode())
        if i % 3 == 0:
            values.append(json.dumps({"event_id": f"x{i}", "type": "cancellation",
                                      "user_id": f"c{i}",
                                      "ts": ms(NOW - timedelta(days=i))}).encode())
    order = fold_messages(store, [("a", None, v) for v in values], NOW, "UTC")
    today = DayMapper("UTC").today(NOW)
    before = _segment_part(compute(store.read(today)))
    assert_segments_match(before, oracle.segment_figures(order, NOW, DIMS, LIMIT))
    short = Store(store.client, KeySpace(shards=1, buckets=8, max_lateness_days=100),
                  store.params, segments=Segments(DIMS, LIMIT))
    assert sweep(short, today) > 0
    fields = [k.decode() for k in store.client.hkeys(store.keys.scust(0))]
    assert all(int(k.rpartition(":")[2]) >= today - 140 for k in fields)
    assert _segment_part(compute(store.read(today))) == before
    store.close()

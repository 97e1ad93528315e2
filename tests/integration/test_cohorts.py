"""Signup cohorts (day-N retention, cohort sizes) and late events against a real
redis-server, a real Redis Cluster and the brute-force oracle.

Random small histories put signups on and around every cohort's edges (the first and
last of its 7 days and the days just outside), repeated signups of one user inside one
cohort week, cancellations, and activity on and next to each day s+N; the events are
folded in a random order (so many arrive weeks after their day), in random batches with
redeliveries, in UTC and in zones whose windows contain a daylight-saving change, at
times close to local midnight. The cohort figures of today and of the day before, their
segment variants and the late-event counts (by the clock of each fold) must equal the
oracle's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.demo.localservers import RedisCluster, RedisServer
from stream.figures import compute
from stream.segments import Segments
from stream.store.store import Store, StoreParams, connect
from stream.timebuckets import DayMapper
from tests.support import oracle
from tests.support.direct import _RealClockIds, fold_messages, fresh_store

#: The processor's clock: the windows of 30+ days before it contain the end of daylight
#: saving time in Europe (2026-10-25) and in the United States (2026-11-01).
TODAY = date(2026, 11, 22)
ZONES = ("UTC", "America/New_York", "Europe/Berlin")
DIMS = ("plan",)
LIMIT = 3
COHORT = ("cohort_retention_ratio", "cohort_users", "previous_day_cohort_retention_ratio",
          "previous_day_cohort_users")
SEGMENT_COHORT = ("segment_cohort_retention_ratio", "segment_cohort_users")


def clock(zone: str, at: time = time(12)) -> datetime:
    return datetime.combine(TODAY, at, tzinfo=ZoneInfo(zone))


def edge_days() -> list[int]:
    """Days before today on and around the edges of every cohort, of today and of the day
    before: the cohort of N as of day t holds signups of t-1-N-6 .. t-1-N."""
    out = set()
    for n in (1, 7, 14, 30):
        for back in (0, 1):
            last = back + 1 + n
            out |= {last - 1, last, last + 1, last + 6, last + 7}
    return sorted(out)


_SIGNUP_DAYS = st.sampled_from(edge_days())
#: local hours: the first and last of a day, and midday
_HOURS = st.sampled_from([0, 12, 23])


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events (as dicts with a `back` day and local `hour`, turned into `ts` later)."""
    users = [f"user-{i}" for i in range(draw(st.integers(1, 5)))]
    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 30))):
        user = draw(st.sampled_from(users))
        kind = draw(st.sampled_from(["signup", "signup", "activity", "activity", "activity",
                                     "cancellation"]))
        back = draw(_SIGNUP_DAYS if kind == "signup" else st.integers(0, 46))
        ev: dict[str, Any] = {"event_id": f"e{i}", "type": kind, "user_id": user,
                              "back": back, "hour": draw(_HOURS),
                              "props": {"plan": draw(st.sampled_from(
                                  ["free", "pro", "team", "biz", ""]))}}
        out.append(ev)
        if kind == "signup" and draw(st.booleans()):
            # activity N days after the signup, or a day off, for one of the N
            n = draw(st.sampled_from([1, 7, 14, 30])) + draw(st.sampled_from([-1, 0, 0, 1]))
            if back - n >= 0:
                out.append({"event_id": f"a{i}", "type": "activity", "user_id": user,
                            "back": back - n, "hour": draw(_HOURS), "props": {}})
        if kind == "signup" and draw(st.integers(0, 3)) == 0:
            # the same user signs up again inside the same cohort week (other plan)
            out.append({**ev, "event_id": f"r{i}", "back": back - draw(st.integers(0, 3)),
                        "props": {"plan": draw(st.sampled_from(["free", "pro"]))}})
    for _ in range(draw(st.integers(0, 3))):  # repeats of an id: the first folded wins
        again = dict(draw(st.sampled_from(out)))
        again["back"] = draw(st.integers(0, 40))
        out.append(again)
    return out


def encode(events: list[dict[str, Any]], zone: str, now: datetime) -> list[bytes]:
    """The events as messages, `ts` at local `hour` of the day `back` days before today
    (no later than a minute before `now`)."""
    tz = ZoneInfo(zone)
    out = []
    for ev in events:
        day = TODAY - timedelta(days=ev["back"])
        hour = ev["hour"]
        at = datetime.combine(day, time(hour, 59 if hour == 23 else 0), tzinfo=tz)
        at = min(at, now - timedelta(minutes=1))
        body = {k: v for k, v in ev.items() if k not in ("back", "hour")}
        body["ts"] = at.isoformat()
        out.append(json.dumps(body).encode())
    return out


def segment_store(url: str, zone: str, shards: int = 1, cluster: bool = False) -> Store:
    """An emptied store with STREAM_SEGMENTS=plan, per-day keys kept as in fresh_store."""
    client = connect(url, cluster=cluster)
    client.flushall()
    keys = _RealClockIds(shards=shards, buckets=max(1, 64 // shards), retention_days=2000)
    store = Store(client, keys, StoreParams(zone, shards, 64), segments=Segments(DIMS, LIMIT))
    store.load_scripts()
    store.check_meta()
    return store


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def expected_late(phases: list[tuple[list[bytes], datetime]], zone: str) -> dict[str, int]:
    """Late events of messages folded in phases, each by the clock of its own fold."""
    out = dict.fromkeys(oracle.LATE_AGES, 0)
    for values, now in phases:
        for age, n in oracle.compute_figures(values, now, zone)["late_events_total"].items():
            out[age] += n
    return out


def assert_close(got: Any, want: Any, what: str) -> None:
    """Equal, nested dicts key by key, floats to 1e-12."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (what, got, want)
        for k, v in want.items():
            assert_close(got[k], v, f"{what}.{k}")
    else:
        assert got == pytest.approx(want, abs=1e-12), (what, got, want)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example])
@given(histories(), st.sampled_from(ZONES), st.randoms(use_true_random=False))
def test_cohorts_and_late_events_match_oracle(redis_url: str, events: list[dict[str, Any]],
                                              zone: str, rnd: random.Random) -> None:
    now = clock(zone)
    earlier = now - timedelta(days=12)
    values = encode(events, zone, now)
    rnd.shuffle(values)  # arrival order unrelated to event time: many arrive weeks late
    # First the events that existed 12 days ago, folded by a clock of that day, then the
    # rest (and some of the first again: repeats) by today's clock.
    old = [v for v in values if rnd.random() < 0.5
           and datetime.fromisoformat(json.loads(v)["ts"]) < earlier - timedelta(minutes=1)]
    rest = [v for v in values if v not in old] + old[: len(old) // 3]
    store = fresh_store(redis_url, zone, buckets=64)
    try:
        order = fold_messages(store, [("t", None, v) for v in old], earlier, zone,
                              batch=6, seed=rnd.randrange(1000))
        order += fold_messages(store, [("u", None, v) for v in rest], now, zone,
                               batch=6, seed=rnd.randrange(1000))
        today = DayMapper(zone).today(now)
        got = compute(store.read(today, previous=True))
        want = oracle.compute_figures(order, now, zone)
        want.update(oracle.previous_day_figures(order, now, zone))
        for name in COHORT:
            assert_close(got[name], want[name], name)
        assert got["late_events_total"] == expected_late([(old, earlier), (rest, now)], zone)
    finally:
        store.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example])
@given(histories(), st.sampled_from(ZONES), st.randoms(use_true_random=False))
def test_segment_cohorts_match_oracle(redis_url: str, events: list[dict[str, Any]],
                                      zone: str, rnd: random.Random) -> None:
    now = clock(zone)
    values = encode(events, zone, now)
    rnd.shuffle(values)
    store = segment_store(redis_url, zone)
    try:
        order = fold_messages(store, [("t", None, v) for v in values], now, zone, batch=6,
                              seed=rnd.randrange(1000))
        got = compute(store.read(DayMapper(zone).today(now)))
        want = oracle.segment_figures(order, now, DIMS, LIMIT, zone)
        for name in SEGMENT_COHORT:
            assert_close(got[name], want[name], name)
        # every cohort member is in exactly one value: the values add up to the cohort
        for n, users in got["cohort_users"].items():
            assert sum(per.get(n, 0) for per in got["segment_cohort_users"]["plan"].values()
                       ) == users
    finally:
        store.close()


def many_events(zone: str, seed: int) -> list[bytes]:
    """A few hundred users' signups (around every cohort) and activity, some cancelled."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    for u in range(400):
        user = f"u{u}"
        for j in range(rnd.randint(1, 2)):
            back = rnd.randint(2, 45)
            events.append({"event_id": f"s{u}-{j}", "type": "signup", "user_id": user,
                           "back": back, "hour": rnd.choice([0, 12, 23]),
                           "props": {"plan": rnd.choice(["free", "pro", "team", "biz"])}})
        for j in range(rnd.randint(0, 12)):
            events.append({"event_id": f"a{u}-{j}", "type": "activity", "user_id": user,
                           "back": rnd.randint(0, 45), "hour": rnd.choice([0, 12, 23]),
                           "props": {}})
        if rnd.random() < 0.2:
            events.append({"event_id": f"c{u}", "type": "cancellation", "user_id": user,
                           "back": rnd.randint(0, 20), "hour": 12, "props": {}})
    values = encode(events, zone, clock(zone))
    rnd.shuffle(values)
    return values


def test_cluster_cohorts_equal_single_redis_and_oracle(redis_cluster: RedisCluster,
                                                       redis_url: str) -> None:
    """16 hash-tag shards on a three-master cluster against one shard on one Redis: the
    same cohort figures, segment variants and late events, equal to the oracle's."""
    zone = "Europe/Berlin"
    now = clock(zone)
    values = many_events(zone, seed=5)
    single = segment_store(redis_url, zone)
    on_cluster = segment_store(redis_cluster.url, zone, shards=16, cluster=True)
    today = DayMapper(zone).today(now)
    try:
        msgs = [("t", None, v) for v in values]
        order = fold_messages(single, msgs, now, zone, batch=300, seed=1)
        assert fold_messages(on_cluster, msgs, now, zone, batch=300, seed=1) == order
        got = compute(on_cluster.read(today, previous=True))
        assert got == compute(single.read(today, previous=True))
        want = oracle.compute_figures(order, now, zone)
        want.update(oracle.previous_day_figures(order, now, zone))
        want.update(oracle.segment_figures(order, now, DIMS, LIMIT, zone))
        for name in (*COHORT, *SEGMENT_COHORT, "late_events_total"):
            assert_close(got[name], want[name], name)
        # every cohort and every age bucket is there to compare
        assert set(got["cohort_users"]) == {"1", "7", "14", "30"}
        assert all(got["late_events_total"].values())
    finally:
        single.close()
        on_cluster.close()


def test_segment_cohorts_are_reread_after_their_cache_time(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Segment cohorts are read at most every SEGMENT_COHORT_SECONDS by a store; the
    unsegmented cohorts are read every time."""
    from stream.store import store as store_module

    zone = "UTC"
    now = clock(zone)
    today = DayMapper(zone).today(now)
    store = segment_store(redis_url, zone)
    try:
        def signup(i: int) -> tuple[str, None, bytes]:
            ev = {"event_id": f"s{i}", "type": "signup", "user_id": f"u{i}",
                  "ts": (now - timedelta(days=3)).isoformat(), "props": {"plan": "pro"}}
            return (f"t{i}", None, json.dumps(ev).encode())

        fold_messages(store, [signup(1)], now, zone)
        first = compute(store.read(today))
        assert first["segment_cohort_users"]["plan"] == {"pro": {"1": 1}}
        fold_messages(store, [signup(2)], now, zone)
        cached = compute(store.read(today))
        assert cached["cohort_users"] == {"1": 2}
        assert cached["segment_cohort_users"] == first["segment_cohort_users"]
        monkeypatch.setattr(store_module, "SEGMENT_COHORT_SECONDS", 0.0)
        again = compute(store.read(today))
        assert again["segment_cohort_users"]["plan"] == {"pro": {"1": 2}}
    finally:
        store.close()

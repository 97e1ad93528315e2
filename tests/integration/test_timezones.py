"""Calendar days in STREAM_TIMEZONE around daylight-saving transitions (days of 23 and 25
hours), against a real redis-server and the brute-force oracle.

The worker reads the real clock, so these tests drive the same path a worker batch takes
(`events.decode -> fold.fold -> Store.apply`, then `Store.read -> figures.compute`) with
a processor clock fixed around each transition: on the transition day, just after it (so
it is "yesterday"), 8 days after (its signups enter the first-week cohort) and 29 days
after (the churn window starts at its midnight). Besides a generated dataset, events
every 20 minutes from the evening before to the morning after, and at 1 ms either side
of each local midnight, straddle the transition; every figure of today, of the
`previous_day_*` family and as of each day around the transition must equal the oracle's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stream.demo.localservers import RedisServer
from stream.figures import as_of_day, compute
from stream.store.store import Store
from stream.timebuckets import DayMapper, day_number
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.direct import fold_messages, fresh_store

TRANSITIONS = [
    ("Europe/Berlin", date(2026, 3, 29)),  # 02:00 -> 03:00, 23 hours
    ("Europe/Berlin", date(2026, 10, 25)),  # 03:00 -> 02:00, 25 hours
    ("America/New_York", date(2026, 3, 8)),  # 02:00 -> 03:00, 23 hours
    ("America/New_York", date(2026, 11, 1)),  # 02:00 -> 01:00, 25 hours (and a month start)
]
#: name -> (days after the transition day, local time of the processor clock)
CLOCKS = {"on": (0, time(12)), "after": (1, time(0, 30)), "first-week": (8, time(10)),
          "churn": (29, time(6))}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def _ms(instant: datetime) -> int:
    return oracle.to_ms(instant)


def straddling(zone: str, day: date, now: datetime) -> list[tuple[str, bytes, bytes]]:
    """Events at instants around the transition day `day` (every 20 minutes of real time
    from 20:00 the evening before to 04:00 the morning after, plus 1 ms either side of
    each local midnight), each by users of their own, no later than a minute before
    `now`. Signups get an activity exactly 7x24 hours later (on a DST week that is day
    s+7 or s+8), every other one a cancellation 3 days later; visits of campaign `dst`
    at every instant, conversions only on the transition day."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day - timedelta(days=1), time(20), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(4), tzinfo=tz).astimezone(UTC)
    instants = []
    t = start
    while t <= end:
        instants.append(t)
        t += timedelta(minutes=20)
    for d in (day, day + timedelta(days=1)):
        midnight = datetime.combine(d, time(0), tzinfo=tz).astimezone(UTC)
        instants += [midnight - timedelta(milliseconds=1), midnight]
    limit = _ms(now) - 60_000
    out: list[tuple[str, bytes, bytes]] = []

    def emit(topic: str, ev: dict[str, Any]) -> None:
        ts = ev["ts"] if isinstance(ev["ts"], int) else oracle.parse_rfc3339_ms(ev["ts"])
        assert ts is not None
        if ts <= limit:
            out.append((topic, ev["user_id"].encode(), json.dumps(ev).encode()))

    for i, instant in enumerate(sorted(instants)):
        ts = _ms(instant)
        local_day = instant.astimezone(tz).date()
        emit("engagement.activity", {"event_id": f"dst-a-{i}", "type": "activity",
                                     "user_id": f"dst-active-{i}", "ts": ts})
        user = f"dst-customer-{i}"
        emit("engagement.activity", {"event_id": f"dst-s-{i}", "type": "signup",
                                     "user_id": user, "ts": ts})
        emit("engagement.activity", {"event_id": f"dst-w-{i}", "type": "activity",
                                     "user_id": user, "ts": ts + 7 * 86_400_000})
        if i % 2:
            emit("engagement.cancellations", {"event_id": f"dst-c-{i}",
                                              "type": "cancellation", "user_id": user,
                                              "ts": ts + 3 * 86_400_000})
        emit("engagement.conversions", {"event_id": f"dst-v-{i}", "type": "visit",
                                        "user_id": f"dst-visitor-{i}", "campaign": "dst",
                                        "ts": instant.isoformat().replace("+00:00", "Z")})
        if local_day == day:
            emit("engagement.conversions", {"event_id": f"dst-k-{i}", "type": "conversion",
                                            "user_id": f"dst-visitor-{i}", "campaign": "dst",
                                            "ts": ts})
        emit("engagement.surveys", {"event_id": f"dst-n-{i}", "type": "survey",
                                    "survey": "nps", "score": i % 11,
                                    "user_id": f"dst-visitor-{i}",
                                    "ts": instant.astimezone(tz).isoformat()})
    return out


def assert_matches(got: dict[str, Any], want: dict[str, Any], unique_tol: float,
                   what: str) -> None:
    assert set(got) == set(want), (what, set(got) ^ set(want))
    for name, value in want.items():
        if name in oracle.UNIQUE_WITH_PREVIOUS_DAY:
            assert got[name] == pytest.approx(value, rel=unique_tol), (what, name)
        elif isinstance(value, dict):
            assert set(got[name]) == set(value), (what, name)
            for k, v in value.items():
                assert got[name][k] == pytest.approx(v, abs=1e-12), (what, name, k)
        elif isinstance(value, float):
            assert got[name] == pytest.approx(value, abs=1e-12), (what, name)
        else:
            assert got[name] == value, (what, name)


def expected_as_of(values: list[bytes | None], now: datetime, day: date,
                   zone: str) -> dict[str, Any]:
    """What `report --day` must print for `day`: its figures and those of the day before
    as `previous_day_*` (stickiness of the day before included)."""
    want = oracle.figures_as_of(values, now, day, zone)
    before = oracle.figures_as_of(values, now, day - timedelta(days=1), zone)
    for name in oracle.PREVIOUS_DAY_FIGURES:
        if name in before:
            want["previous_day_" + name] = before[name]
    return want


def check_store(store: Store, values: list[bytes | None], now: datetime, zone: str,
                days: list[date], unique_tol: float) -> None:
    today = DayMapper(zone).today(now)
    got = compute(store.read(today, previous=True))
    want = oracle.compute_figures(values, now, zone)
    want.update(oracle.previous_day_figures(values, now, zone))
    assert_matches(got, want, unique_tol, "today")
    for d in days:
        if day_number(d) <= today:
            got_day = as_of_day(compute(store.read(day_number(d), previous=True)))
            want_day = expected_as_of(values, now, d, zone)
            assert_matches(got_day, want_day, unique_tol, f"as of {d}")


@pytest.mark.parametrize("clock", list(CLOCKS))
@pytest.mark.parametrize(("zone", "day"), TRANSITIONS,
                         ids=[f"{z.split('/')[1]}-{d}" for z, d in TRANSITIONS])
def test_transition_edges_alone(redis_url: str, zone: str, day: date, clock: str) -> None:
    """Only the straddling events: few users, so a single event on the wrong local day
    shows in the exact figures (and the HyperLogLogs are within 1%)."""
    after, at = CLOCKS[clock]
    now = datetime.combine(day + timedelta(days=after), at, tzinfo=ZoneInfo(zone))
    messages = straddling(zone, day, now)
    store = fresh_store(redis_url, zone)
    try:
        fold_messages(store, messages, now, zone, batch=50)
        around = [day + timedelta(days=k) for k in (-1, 0, 1, 2, 7, 8)]
        check_store(store, [v for _, _, v in messages], now, zone, around, unique_tol=0.01)
    finally:
        store.close()


@pytest.mark.parametrize("clock", list(CLOCKS))
@pytest.mark.parametrize(("zone", "day"), TRANSITIONS,
                         ids=[f"{z.split('/')[1]}-{d}" for z, d in TRANSITIONS])
def test_transition_with_dataset(redis_url: str, zone: str, day: date, clock: str) -> None:
    """A generated dataset in the zone plus the straddling events."""
    after, at = CLOCKS[clock]
    now = datetime.combine(day + timedelta(days=after), at, tzinfo=ZoneInfo(zone))
    data = ds.generate(now.astimezone(UTC), size=1500, seed=day.toordinal() + after,
                       timezone=zone)
    messages = [*data.messages, *straddling(zone, day, now)]
    store = fresh_store(redis_url, zone, shards=2)
    try:
        fold_messages(store, messages, data.now, zone)
        check_store(store, [v for _, _, v in messages], data.now, zone,
                    [day - timedelta(days=1), day], unique_tol=0.03)
    finally:
        store.close()


def test_days_are_local_days() -> None:
    """The day of an instant is its calendar date in the zone, whatever the offset."""
    berlin = DayMapper("Europe/Berlin")
    fall = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first 02:30
    assert berlin.day_of_ms(_ms(fall)) == day_number(date(2026, 10, 25))
    assert berlin.day_of_ms(_ms(fall + timedelta(hours=1))) == day_number(date(2026, 10, 25))
    # The 25-hour day ends at 23:00 UTC, the 23-hour one at 22:00 UTC.
    assert berlin.day_of_ms(_ms(datetime(2026, 10, 25, 22, 59, 59, tzinfo=UTC))) == (
        day_number(date(2026, 10, 25)))
    assert berlin.day_of_ms(_ms(datetime(2026, 10, 25, 23, 0, tzinfo=UTC))) == (
        day_number(date(2026, 10, 26)))
    ny = DayMapper("America/New_York")
    assert ny.day_of_ms(_ms(datetime(2026, 3, 8, 4, 59, 59, 999000, tzinfo=UTC))) == (
        day_number(date(2026, 3, 7)))
    assert ny.day_of_ms(_ms(datetime(2026, 3, 8, 5, 0, tzinfo=UTC))) == (
        day_number(date(2026, 3, 8)))
    assert ny.day_of_ms(_ms(datetime(2026, 3, 9, 3, 59, 59, 999000, tzinfo=UTC))) == (
        day_number(date(2026, 3, 8)))
    assert ny.day_of_ms(_ms(datetime(2026, 3, 9, 4, 0, tzinfo=UTC))) == (
        day_number(date(2026, 3, 9)))

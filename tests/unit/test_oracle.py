"""The brute-force oracle checked against small cases worked out by hand, and the
dataset generator checked against the oracle."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import dataset, oracle

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)  # today = 2026-11-22 in UTC
_ids = iter(range(1_000_000))


def ev(etype: str, user: str, ts: int | str, **fields: Any) -> bytes:
    obj: dict[str, Any] = {"event_id": fields.pop("event_id", f"id-{next(_ids)}")}
    obj.update(type=etype, user_id=user, ts=ts, **fields)
    return json.dumps(obj).encode()


def ms(text: str) -> int:
    return oracle.to_ms(datetime.fromisoformat(text))


GOOD = {"event_id": "e1", "type": "activity", "user_id": "u1", "ts": "2026-11-22T10:00:00Z"}


def with_(**changes: Any) -> bytes:
    obj = dict(GOOD)
    for k, v in changes.items():
        if v is KeyError:
            obj.pop(k)
        else:
            obj[k] = v
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (with_(), None),
        (with_(ts=ms("2026-11-22T10:00:00+00:00")), None),
        (with_(ts="2026-11-22T10:00:00.123+05:30"), None),
        (with_(props=None), None),
        (with_(props={}), None),
        (with_(props={"plan": "pro"}), None),
        (with_(campaign=5, score="x", survey=None, extra=[1]), None),  # not for activity
        (with_(event_id="e" * 128, user_id="u" * 256), None),
        (with_(type="survey", survey="nps", score=0), None),
        (with_(type="survey", survey="csat", score=5), None),
        (with_(type="visit", campaign="Spring"), None),
        (with_(ts="2026-11-22t10:00:00z"), None),  # RFC 3339 allows lower case
        (b"{}{}", "invalid_json"),
        (b"[1, 2", "invalid_json"),
        (b'{"event_id": "a", "type": "activity"} x', "invalid_json"),
        (with_(event_id="\ud800"), "invalid_json"),  # lone surrogate: not UTF-8
        (None, "invalid_json"),
        (b"", "invalid_json"),
        (b" ", "invalid_json"),
        (b"\xff{}", "invalid_json"),
        (b"NaN", "invalid_json"),
        (b'{"event_id": Infinity}', "invalid_json"),
        (b"{", "invalid_json"),
        (b"null", "invalid_event"),
        (b"[]", "invalid_event"),
        (b"7", "invalid_event"),
        (with_(event_id=KeyError), "invalid_event"),
        (with_(user_id=None), "invalid_event"),
        (with_(type=""), "invalid_event"),
        (with_(type="Activity"), "invalid_event"),
        (with_(event_id=3), "invalid_event"),
        (with_(event_id="e" * 129), "invalid_event"),
        (with_(user_id="u" * 257), "invalid_event"),
        (with_(ts=1.7e12), "invalid_event"),
        (with_(ts=True), "invalid_event"),
        (with_(ts="2026-11-22T10:00:00"), "invalid_event"),
        (with_(ts="2026-11-22 10:00:00Z"), "invalid_event"),
        (with_(ts="2026-11-22"), "invalid_event"),
        (with_(ts="2026-11-22T10:00:00+0100"), "invalid_event"),
        (with_(ts="2026-11-31T10:00:00Z"), "invalid_event"),
        (with_(props="pro"), "invalid_event"),
        (with_(props={"plan": 2}), "invalid_event"),
        (with_(props={"plan": None}), "invalid_event"),
        (with_(type="visit"), "invalid_event"),
        (with_(type="conversion", campaign=""), "invalid_event"),
        (with_(type="survey", survey="nps", score=11), "invalid_event"),
        (with_(type="survey", survey="csat", score=0), "invalid_event"),
        (with_(type="survey", survey="csat", score=4.0), "invalid_event"),
        (with_(type="survey", survey="csat", score=True), "invalid_event"),
        (with_(type="survey", survey="NPS", score=5), "invalid_event"),
        (with_(type="survey", score=5), "invalid_event"),
    ],
)
def test_validation(value: bytes | None, reason: str | None) -> None:
    assert oracle.check(value, NOW).reason == reason


def test_lateness_and_future_limits() -> None:
    now_ms = oracle.to_ms(NOW)
    day = 24 * 3600 * 1000
    # Accepted from exactly now - 400 x 24 h to exactly now + 5 min.
    assert oracle.check(with_(ts=now_ms - 400 * day), NOW).reason is None
    assert oracle.check(with_(ts=now_ms - 400 * day - 1), NOW).reason == "late"
    assert oracle.check(with_(ts=now_ms + 300_000), NOW).reason is None
    assert oracle.check(with_(ts=now_ms + 300_001), NOW).reason == "future"
    assert oracle.check(with_(ts="2026-11-22T12:05:00Z"), NOW).reason is None
    assert oracle.check(with_(ts="2026-11-22T13:05:01+01:00"), NOW).reason == "future"
    assert oracle.check(with_(ts=now_ms - 11 * day), NOW, 10).reason == "late"
    assert oracle.check(with_(ts=0), NOW).reason == "late"


def test_active_users_and_stickiness() -> None:
    values = [
        ev("activity", "u1", "2026-11-22T08:00:00Z"),  # today
        ev("activity", "u1", "2026-11-21T08:00:00Z"),  # yesterday
        ev("activity", "u2", "2026-11-16T08:00:00Z"),  # 6 days ago: in the 7 days
        ev("activity", "u3", "2026-11-15T23:59:59.999Z"),  # 7 days ago: not in the 7
        ev("activity", "u4", ms("2026-10-24T00:00:00+00:00")),  # 29 days ago, October
        ev("activity", "u5", "2026-10-23T23:59:59.999Z"),  # 30 days ago
    ]
    f = oracle.compute_figures(values, NOW)
    assert f["daily_active_users"] == 1  # u1
    assert f["weekly_active_users"] == 2  # u1 u2
    assert f["monthly_active_users"] == 4  # u1 u2 u3 u4
    assert f["calendar_month_active_users"] == 3  # u1 u2 u3 (November)
    assert f["stickiness_ratio"] == 1 / 4
    # Yesterday {u1} over 2026-10-23..2026-11-21 {u1 u2 u3 u4 u5}.
    assert f["previous_day_stickiness_ratio"] == 1 / 5


def test_customers_and_churn() -> None:
    start = "2026-10-24T00:00:00Z"  # 00:00 of the day 29 days before 2026-11-22
    values = [
        ev("signup", "a", "2026-09-01T10:00:00Z"),
        ev("signup", "b", "2026-09-01T10:00:00Z"),
        ev("cancellation", "b", "2026-11-01T10:00:00Z"),
        ev("signup", "c", "2026-09-01T10:00:00Z"),
        ev("cancellation", "c", "2026-11-01T10:00:00Z"),
        ev("signup", "c", "2026-11-10T10:00:00Z"),
        ev("signup", "d", start),
        ev("signup", "e", ms(start) - 1),
        ev("signup", "f", "2026-11-05T10:00:00Z"),
        ev("cancellation", "f", "2026-11-05T11:00:00+01:00"),  # same instant
        ev("cancellation", "g", "2026-09-05T10:00:00Z"),  # delivered first, but later
        ev("signup", "g", "2026-09-01T10:00:00Z"),
        ev("signup", "h", "2026-10-01T10:00:00Z"),
        ev("cancellation", "h", ms(start)),
    ]
    f = oracle.compute_figures(values, NOW)
    # a (never cancelled), c (signed up again), d and e (signups) are customers;
    # b, h cancelled; f: tie, cancellation wins; g: cancellation is the latest.
    assert f["customers"] == 4
    # At the start: a, b, c, e (1 ms before), h. Not d (at the instant), f, g.
    # Cancelled inside the window: b, c (even though back), h (exactly at the start).
    assert f["churn_ratio"] == pytest.approx(3 / 5)
    assert f["retention_ratio"] == pytest.approx(2 / 5)


def test_first_week() -> None:
    values = [
        ev("signup", "p", "2026-11-14T12:00:00Z"),  # day 8
        ev("activity", "p", "2026-11-15T00:00:00Z"),  # s+1
        ev("signup", "q", "2026-10-16T23:59:59.999Z"),  # day 37
        ev("activity", "q", "2026-10-23T23:59:59.999Z"),  # s+7
        ev("signup", "r", "2026-10-16T01:00:00Z"),  # day 37
        ev("activity", "r", "2026-10-16T20:00:00Z"),  # s: not after
        ev("activity", "r", "2026-10-24T00:00:00Z"),  # s+8: too late
        ev("signup", "s", "2026-11-15T12:00:00Z"),  # day 7: not in the cohort
        ev("activity", "s", "2026-11-16T12:00:00Z"),
        ev("signup", "t", "2026-10-15T12:00:00Z"),  # day 38: not in the cohort
        ev("activity", "t", "2026-10-16T12:00:00Z"),
        ev("signup", "v", "2026-11-01T12:00:00Z"),
        ev("signup", "v", "2026-10-20T12:00:00Z"),  # earliest: s = 10-20 ...
        ev("activity", "v", "2026-11-02T12:00:00Z"),  # ... so s+13: not counted
        ev("cancellation", "p", "2026-11-16T12:00:00Z"),  # cancelled since: still in
    ]
    f = oracle.compute_figures(values, NOW)
    assert f["first_week_active_ratio"] == 2 / 4  # p q of p q r v


def test_conversion_nps_csat() -> None:
    values = [
        ev("visit", "x", "2026-10-24T00:00:00Z", campaign="spring"),  # first day in
        ev("visit", "x", "2026-11-01T00:00:00Z", campaign="spring"),
        ev("visit", "y", "2026-11-22T09:00:00Z", campaign="spring"),
        ev("visit", "y", "2026-10-23T23:59:59.999Z", campaign="spring"),  # out
        ev("conversion", "x", "2026-11-02T00:00:00Z", campaign="spring"),
        ev("conversion", "x", "2026-10-20T00:00:00Z", campaign="spring"),  # out
        ev("visit", "x", "2026-11-02T00:00:00Z", campaign="Spring"),
        ev("conversion", "x", "2026-11-02T00:00:00Z", campaign="Spring"),
        ev("conversion", "z", "2026-11-03T00:00:00Z", campaign="Spring"),
        ev("conversion", "z", "2026-11-03T00:00:00Z", campaign="summer"),  # no visits
        *[
            ev("survey", "s", "2026-11-20T10:00:00Z", survey="nps", score=s)
            for s in (10, 9, 9, 8, 6)
        ],
        ev("survey", "s", "2026-10-23T10:00:00Z", survey="nps", score=0),  # out
        *[ev("survey", "s", "2026-11-20T10:00:00Z", survey="csat", score=s) for s in (5, 4, 3, 1)],
    ]
    f = oracle.compute_figures(values, NOW)
    assert f["conversion_ratio"] == {"Spring": 2.0, "spring": 1 / 3}
    assert f["nps_score"] == pytest.approx(100 * (3 - 1) / 5)  # 40
    assert f["csat_ratio"] == 2 / 4


def test_duplicates() -> None:
    values = [
        ev("signup", "a", "2026-11-01T10:00:00Z", event_id="X"),
        ev("cancellation", "a", "2026-11-02T10:00:00Z", event_id="X"),  # ignored
        ev("survey", "a", "2026-11-20T10:00:00Z", event_id="S", survey="nps", score=10),
        ev("survey", "a", "2026-11-20T10:00:00Z", event_id="S", survey="nps", score=0),
        ev("activity", "a", "2026-11-22T10:00:00Z", event_id="A"),
        ev("activity", "a", "2026-11-22T10:00:00Z", event_id="A"),  # same, harmless
        b"[]",
        ev("visit", "v", "2026-11-20T10:00:00Z", event_id="V", campaign=""),  # dead
        ev("visit", "v", "2026-11-20T10:00:00Z", event_id="V", campaign="c"),  # first ok
        ev("visit", "v", "2026-11-20T10:00:00Z", event_id="V", campaign="d"),  # repeat
    ]
    f = oracle.compute_figures(values, NOW)
    assert f["customers"] == 1
    assert f["nps_score"] == 100.0
    assert f["daily_active_users"] == 1
    assert f["conversion_ratio"] == {"c": 0.0}
    assert f["events_total"] == {
        "activity": 2,
        "signup": 1,
        "visit": 2,
        "conversion": 0,
        "cancellation": 1,
        "survey": 2,
    }
    assert f["dead_letter_total"] == {
        "invalid_json": 0,
        "invalid_event": 2,
        "late": 0,
        "future": 0,
    }


def test_zero_denominators_left_out() -> None:
    f = oracle.compute_figures([b"not json"], NOW)
    for name in (
        "stickiness_ratio",
        "previous_day_stickiness_ratio",
        "churn_ratio",
        "retention_ratio",
        "nps_score",
        "csat_ratio",
        "first_week_active_ratio",
    ):
        assert name not in f
    assert f["conversion_ratio"] == {}
    assert f["daily_active_users"] == 0
    assert f["customers"] == 0
    assert f["dead_letter_total"]["invalid_json"] == 1


def test_days_follow_the_time_zone() -> None:
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # 2026-11-21 22:00 in New York
    values = [
        ev("activity", "a", "2026-11-22T01:00:00Z"),  # 11-21 20:00 local: today
        ev("activity", "b", "2026-11-21T04:59:59.999Z"),  # 11-20 23:59:59.999: yesterday
        ev("activity", "c", "2026-11-21T05:00:00Z"),  # 11-21 00:00 local: today
    ]
    f = oracle.compute_figures(values, now, "America/New_York")
    assert f["daily_active_users"] == 2
    g = oracle.compute_figures(values, now, "UTC")  # today is 11-22 in UTC
    assert g["daily_active_users"] == 1


# -- the dataset generator, checked with the oracle ------------------------------------


@pytest.fixture(scope="module")
def small() -> dataset.Dataset:
    return dataset.generate(NOW, size=3000, seed=7, timezone="Europe/Berlin")


def test_dataset_dead_letters_match_oracle(small: dataset.Dataset) -> None:
    found = oracle.dead_letter_counts(small.values(), NOW, small.max_lateness_days)
    assert dict(found) == {r: n for r, n in small.expected_dead_letters.items() if n}
    assert all(n > 0 for n in small.expected_dead_letters.values())


def test_dataset_is_deterministic(small: dataset.Dataset) -> None:
    again = dataset.generate(NOW, size=3000, seed=7, timezone="Europe/Berlin")
    assert again.messages == small.messages
    other = dataset.generate(NOW, size=3000, seed=8, timezone="Europe/Berlin")
    assert other.messages != small.messages


def test_dataset_figures_independent_of_interleaving(small: dataset.Dataset) -> None:
    """Any delivery that keeps each (topic, key) in order gives the same figures,
    and so does a later clock before ``stable_until``."""
    expected = oracle.compute_figures(small.values(), NOW, small.timezone)
    queues: dict[tuple[str, bytes | None], list[bytes]] = {}
    rng = random.Random(1)
    for topic, key, value in small.messages:
        # Keyless messages may land on any partition: give each its own queue.
        group = (topic, key if key is not None else str(rng.random()).encode())
        queues.setdefault(group, []).append(value)
    delivered: list[bytes | None] = []
    pending = list(queues.values())
    while pending:
        q = rng.choice(pending)
        delivered.append(q.pop(0))
        if not q:
            pending.remove(q)
    later = min(small.stable_until - timedelta(milliseconds=1), NOW + timedelta(minutes=20))
    assert small.is_stable_at(later)
    assert oracle.compute_figures(delivered, later, small.timezone) == expected


def test_dataset_covers_every_figure(small: dataset.Dataset) -> None:
    f = oracle.compute_figures(small.values(), NOW, small.timezone)
    for name in (
        "stickiness_ratio",
        "previous_day_stickiness_ratio",
        "churn_ratio",
        "nps_score",
        "csat_ratio",
        "first_week_active_ratio",
    ):
        assert name in f
    assert f["daily_active_users"] > 10
    assert f["customers"] > 10
    assert 0 < f["churn_ratio"] < 1
    assert len(f["conversion_ratio"]) >= 6
    assert all(n > 0 for n in f["events_total"].values())
    run = oracle.run(small.values(), NOW, small.timezone)
    assert len(run.accepted) > len(run.folded)  # some repeats were ignored


def test_unique_sets_name_figures_of_the_oracle(small: dataset.Dataset) -> None:
    """The hand-written sets of HyperLogLog figures name figures the oracle computes: a
    misspelt name would make a test compare that figure exactly, or not at all."""
    values = small.values()
    f = oracle.compute_figures(values, NOW, small.timezone)
    f.update(oracle.previous_day_figures(values, NOW, small.timezone))
    assert oracle.UNIQUE < oracle.UNIQUE_WITH_PREVIOUS_DAY <= set(f)
    segs = oracle.segment_figures(values, NOW, ("plan",), timezone=small.timezone)
    assert set(segs) >= oracle.SEGMENT_UNIQUE


def test_cohorts_and_late_events_worked_by_hand() -> None:
    """Today 11-22, yesterday 11-21: the D1 cohort holds signups of 11-14..11-20, the D7
    cohort those of 11-08..11-14."""
    values = [
        # a: signs up 11-19, active 11-20 (s+1): retained in D1
        ev("signup", "a", "2026-11-19T23:59:00Z"), ev("activity", "a", "2026-11-20T00:00:00Z"),
        # b: signups 11-14 and 11-18 -> s = 11-14; active 11-15: retained in D1 (the
        # later signup does not matter), and in D7 from s = 11-14 with 11-21 active
        ev("signup", "b", "2026-11-18T10:00:00Z"), ev("signup", "b", "2026-11-14T10:00:00Z"),
        ev("activity", "b", "2026-11-15T10:00:00Z"), ev("activity", "b", "2026-11-21T10:00:00Z"),
        # c: a signup before the D1 week (11-13) and one on its last day (11-20), then
        # cancelled; active 11-22 only (s+2): in the D1 cohort, not retained; in D7 from
        # 11-13 (s+7 = 11-20: not active)
        ev("signup", "c", "2026-11-13T10:00:00Z"), ev("signup", "c", "2026-11-20T10:00:00Z"),
        ev("cancellation", "c", "2026-11-20T11:00:00Z"),
        ev("activity", "c", "2026-11-22T10:00:00Z"),
        # d: signs up on 11-21 (yesterday): in no cohort yet
        ev("signup", "d", "2026-11-21T10:00:00Z"), ev("activity", "d", "2026-11-22T10:00:00Z"),
    ]
    f = oracle.compute_figures(values, NOW)
    assert f["cohort_users"] == {"1": 3, "7": 2}
    assert f["cohort_retention_ratio"] == {"1": pytest.approx(2 / 3), "7": 0.5}
    # late: ages 3, 2, 4, 8, 7, 1, 9, 2, 2, 1 days (the two activities of today are not)
    assert f["late_events_total"] == {"1d": 2, "2-7d": 6, "8-30d": 2, "31d+": 0}
    repeat = oracle.compute_figures([*values, values[0], ev("activity", "e", ms(
        "2026-10-01T00:00:00+00:00"))], NOW)
    assert repeat["late_events_total"] == {"1d": 2, "2-7d": 7, "8-30d": 2, "31d+": 1}
    before = oracle.previous_day_figures(values, NOW)
    # As of 11-21: the D1 cohort holds signups of 11-13..11-19: a (s 11-19, active 11-20),
    # b (s 11-14, active 11-15) and c (s 11-13, not active 11-14); D7 those of
    # 11-07..11-13: c alone, not active on 11-20.
    assert before["previous_day_cohort_users"] == {"1": 3, "7": 1}
    assert before["previous_day_cohort_retention_ratio"] == {"1": pytest.approx(2 / 3),
                                                              "7": 0.0}

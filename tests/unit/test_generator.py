"""The synthetic event model: contract validity, determinism, time range and mix."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stream.demo.generator import (
    BAD_MESSAGE_REASONS,
    EVENT_TYPES,
    TOPICS,
    CompressedDay,
    Event,
    EventModel,
    bad_message,
    restamp,
    topic_for,
)
from stream.demo.producer import produce_events

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
DAY_MS = 86_400_000
LATENESS_DAYS = 400  # the processor's default STREAM_MAX_LATENESS_DAYS
FUTURE_MS = 5 * 60_000

# --------------------------------------------------------------------------------------
# An independent reading of the contract (section 1), written without the generator's
# helpers so that a shared misunderstanding cannot make both sides agree.

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_TYPES = {"activity", "signup", "visit", "conversion", "cancellation", "survey"}
_SCORE_RANGE = {"nps": (0, 10), "csat": (1, 5)}


def _is_text(value: object, max_len: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= max_len


def contract_problem(event: object) -> str | None:
    """Why ``event`` (decoded JSON) is not a valid contract event, or None if it is."""
    if not isinstance(event, dict):
        return "not an object"
    if not _is_text(event.get("event_id"), 128):
        return "event_id"
    if event.get("type") not in _TYPES:
        return "type"
    if not _is_text(event.get("user_id"), 256):
        return "user_id"
    ts = event.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | str):
        return "ts type"
    if isinstance(ts, str):
        if not _RFC3339.fullmatch(ts):
            return "ts format"
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            return "ts value"
    etype = event["type"]
    if etype in ("visit", "conversion") and not _is_text(event.get("campaign"), 10_000):
        return "campaign"
    if etype == "survey":
        survey = event.get("survey")
        if survey not in _SCORE_RANGE:
            return "survey"
        score = event.get("score")
        if isinstance(score, bool) or not isinstance(score, int):
            return "score type"
        low, high = _SCORE_RANGE[survey]
        if not low <= score <= high:
            return "score range"
    props = event.get("props")
    if props is not None:
        if not isinstance(props, dict):
            return "props"
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
            return "props value"
    return None


def ts_ms(event: Event) -> int:
    """Event time in epoch milliseconds."""
    ts = event["ts"]
    if isinstance(ts, int):
        return ts
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def dead_letter_reason(raw: bytes, now: datetime) -> str | None:
    """The reason code the processor should give ``raw``, or None if it is acceptable."""
    try:
        decoded = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # also covers UnicodeDecodeError and JSONDecodeError
        return "invalid_json"
    if contract_problem(decoded) is not None:
        return "invalid_event"
    now_ms = int(now.timestamp() * 1000)
    at = ts_ms(decoded)
    if at < now_ms - LATENESS_DAYS * DAY_MS:
        return "late"
    if at > now_ms + FUTURE_MS:
        return "future"
    return None


# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history() -> list[Event]:
    return list(EventModel(users=2000, seed=7).history(NOW, days=40))


def _window_events(events: Iterable[Event], days: int) -> list[Event]:
    start = int(NOW.timestamp() * 1000) - days * DAY_MS
    return [e for e in events if ts_ms(e) >= start]


def test_every_history_event_is_valid_and_unique(history: list[Event]) -> None:
    problems = collections.Counter(contract_problem(e) for e in history)
    assert problems == collections.Counter({None: len(history)})
    assert len({e["event_id"] for e in history}) == len(history)
    # Every one also survives a JSON round trip unchanged (no tuples, no datetimes).
    assert all(json.loads(json.dumps(e)) == e for e in history[:5000])


def test_history_is_deterministic_per_seed() -> None:
    first = list(EventModel(users=300, seed=3).history(NOW, days=10))
    again = list(EventModel(users=300, seed=3).history(NOW, days=10))
    other = list(EventModel(users=300, seed=4).history(NOW, days=10))
    assert first == again
    assert first != other


def test_history_times_are_in_range_and_ordered(history: list[Event]) -> None:
    now_ms = int(NOW.timestamp() * 1000)
    start = now_ms - 40 * DAY_MS
    times = [ts_ms(e) for e in history]
    assert max(times) <= now_ms
    # Before the window only the customer base's signups and cancellations appear, and
    # they are young enough for the processor's default lateness.
    before = [e for e, t in zip(history, times, strict=True) if t < start]
    assert before
    assert {e["type"] for e in before} <= {"signup", "cancellation"}
    assert min(times) >= now_ms - LATENESS_DAYS * DAY_MS
    # Ordered to the second (most ts shapes carry no milliseconds).
    seconds = [t // 1000 for t in times]
    assert seconds == sorted(seconds)


def test_history_without_baseline_stays_in_the_window() -> None:
    events = list(EventModel(users=500, seed=2).history(NOW, days=12, baseline=False))
    now_ms = int(NOW.timestamp() * 1000)
    assert events
    assert all(now_ms - 12 * DAY_MS <= ts_ms(e) <= now_ms for e in events)


def test_history_size_is_proportional(history: list[Event]) -> None:
    activity = sum(1 for e in history if e["type"] == "activity")
    assert 0.4 * 2000 * 40 <= activity <= 0.9 * 2000 * 40
    small = sum(1 for _ in EventModel(users=500, seed=7).history(NOW, days=40))
    assert 0.15 < small / len(history) < 0.35


def test_all_types_and_ts_shapes_appear(history: list[Event]) -> None:
    assert {e["type"] for e in history} == set(EVENT_TYPES)
    shapes = collections.Counter(
        "int" if isinstance(e["ts"], int) else ("Z" if e["ts"].endswith("Z") else "offset")
        for e in history
    )
    assert set(shapes) == {"int", "Z", "offset"}
    plain = list(EventModel(users=200, seed=1, plain_ts=True).history(NOW, days=5))
    assert all(isinstance(e["ts"], int) or re.fullmatch(r"[\dT:-]{19}Z", e["ts"]) for e in plain)


def test_history_mix_is_plausible(history: list[Event]) -> None:
    recent = _window_events(history, 30)
    csat = [e["score"] for e in recent if e["type"] == "survey" and e["survey"] == "csat"]
    nps = [e["score"] for e in recent if e["type"] == "survey" and e["survey"] == "nps"]
    assert len(csat) > 200 and len(nps) > 100
    assert 0.6 <= sum(s >= 4 for s in csat) / len(csat) <= 0.95
    nps_score = 100 * (sum(s >= 9 for s in nps) - sum(s <= 6 for s in nps)) / len(nps)
    assert 5 <= nps_score <= 55

    visits = collections.Counter(e["campaign"] for e in recent if e["type"] == "visit")
    conversions = collections.Counter(e["campaign"] for e in recent if e["type"] == "conversion")
    assert 5 <= len(visits) <= 8
    ratios = {c: conversions[c] / visits[c] for c in visits}
    assert all(0.003 <= r <= 0.2 for r in ratios.values()), ratios
    assert max(ratios.values()) > 3 * min(ratios.values())  # campaigns really differ

    # Props are low-cardinality strings.
    plans = {e["props"]["plan"] for e in history if e["type"] == "activity"}
    assert plans <= {"basic", "pro", "team", "enterprise"}


def _by_day(ms: int) -> int:
    return ms // DAY_MS


def test_customers_churn_and_first_week_are_meaningful() -> None:
    events = list(EventModel(users=5000, seed=11).history(NOW, days=40))
    today = _by_day(int(NOW.timestamp() * 1000))
    window_start = (today - 29) * DAY_MS
    changes: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    active: dict[int, set[str]] = collections.defaultdict(set)
    first_signup: dict[str, int] = {}
    for e in events:
        at = ts_ms(e)
        if e["type"] == "activity":
            active[_by_day(at)].add(e["user_id"])
        elif e["type"] in ("signup", "cancellation"):
            # Cancellation sorts after a signup at the same instant, as the contract says.
            changes[e["user_id"]].append((at, int(e["type"] == "cancellation")))
            if e["type"] == "signup" and 8 <= today - _by_day(at) <= 37:
                first_signup.setdefault(e["user_id"], _by_day(at))
    customers = sum(1 for c in changes.values() if max(c)[1] == 0)
    assert 0.6 * 5000 <= customers <= 0.98 * 5000

    base = [c for c in changes.values() if [x for x in c if x[0] < window_start]]
    base = [c for c in base if max(x for x in c if x[0] < window_start)[1] == 0]
    churned = sum(1 for c in base if any(x[1] == 1 and x[0] >= window_start for x in c))
    assert 0.015 <= churned / len(base) <= 0.07

    assert len(first_signup) > 200
    took_part = sum(
        1 for u, day in first_signup.items() if any(u in active[day + k] for k in range(1, 8))
    )
    assert 0.5 <= took_part / len(first_signup) <= 0.75

    mau = set().union(*(active[today - k] for k in range(30)))
    yesterday = active[today - 1]
    assert 0.5 * 5000 <= len(mau) <= 0.95 * 5000
    assert 0.1 <= len(yesterday) / len(mau) <= 0.45


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGE_REASONS))
def test_bad_messages_get_their_reason(kind: str) -> None:
    raw = bad_message(random.Random(kind), NOW, kind)
    assert isinstance(raw, bytes)
    assert dead_letter_reason(raw, NOW) == BAD_MESSAGE_REASONS[kind]


def test_random_bad_messages_are_all_rejected() -> None:
    rng = random.Random(9)
    reasons = collections.Counter(
        dead_letter_reason(bad_message(rng, NOW), NOW) for _ in range(400)
    )
    assert None not in reasons
    assert set(reasons) == {"invalid_json", "invalid_event", "late", "future"}
    # Without a clock there is no "future", and the result is still always bad.
    rng = random.Random(9)
    assert all(dead_letter_reason(bad_message(rng), NOW) for _ in range(200))
    assert bad_message(random.Random(1), NOW) == bad_message(random.Random(1), NOW)
    with pytest.raises(ValueError):
        bad_message(rng, NOW, "no-such-kind")


def test_routing_covers_all_topics() -> None:
    assert {topic_for(t) for t in EVENT_TYPES} == set(TOPICS)
    assert topic_for("activity") == topic_for("signup") == "engagement.activity"
    assert topic_for("visit") == topic_for("conversion") == "engagement.conversions"
    assert topic_for("cancellation") == "engagement.cancellations"
    assert topic_for("survey") == "engagement.surveys"
    with pytest.raises(ValueError):
        topic_for("purchase")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        next(EventModel(users=10).history(datetime(2026, 1, 1), days=1))


# --------------------------------------------------------------------- producer helpers


class FakeProducer:
    """Records what would be sent; acknowledgements complete immediately."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value, key))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_produce_events_routes_keys_and_encodes() -> None:
    events = list(EventModel(users=200, seed=1).history(NOW, days=5))
    producer = FakeProducer()
    seen: list[int] = []
    total = await produce_events(producer, events, progress=seen.append, chunk=500)
    assert total == len(events) == len(producer.sent)
    assert seen[-1] == total and seen == sorted(seen)
    for event, (topic, value, key) in zip(events, producer.sent, strict=True):
        assert topic == topic_for(event["type"])
        assert key == event["user_id"].encode()
        assert json.loads(value) == event


# ------------------------------------------------------------- a day plan and its play

DAY_START = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday: its yesterday is a Sunday
DAY_END = DAY_START + timedelta(days=1)


def _day_of(ms: int) -> int:
    return ms // DAY_MS


def _active(events: Iterable[Event], day: int) -> set[str]:
    return {e["user_id"] for e in events if e["type"] == "activity" and _day_of(ts_ms(e)) == day}


@pytest.mark.parametrize("seed", [1, 2])
def test_a_whole_day_has_about_yesterdays_active_users(seed: int) -> None:
    """Every day of a week, today's whole-day active users (history so far and the rest
    of the day) stay within 10 % of yesterday's, Monday after a weekend included: the
    demo's bound (today at most 1.1 times yesterday) holds at any speed of play."""
    model = EventModel(users=5000, seed=seed)
    for shift in range(7):
        start = DAY_START + timedelta(days=shift)
        plan = model.plan_day(start + timedelta(hours=15), start, start + timedelta(days=1),
                              days=2)
        today = _day_of(plan.day_start_ms)
        whole = _active(plan.history, today) | _active((e for _, e in plan.rest), today)
        yesterday = _active(plan.history, today - 1)
        assert 0.9 * len(yesterday) <= len(whole) <= 1.1 * len(yesterday), (shift, seed)
        # The rest of the day brings users the history did not have yet.
        assert len(_active(plan.history, today)) < 0.85 * len(whole)


def _ratio(events: list[Event], first: int, last: int) -> dict[str, float]:
    """Conversion, NPS and CSAT of the days first..last, by the contract's definitions."""
    inside = [e for e in events if first <= _day_of(ts_ms(e)) <= last]
    visits = sum(e["type"] == "visit" for e in inside)
    conversions = sum(e["type"] == "conversion" for e in inside)
    nps = [e["score"] for e in inside if e["type"] == "survey" and e["survey"] == "nps"]
    csat = [e["score"] for e in inside if e["type"] == "survey" and e["survey"] == "csat"]
    return {"conversion": conversions / visits,
            "nps": 100 * (sum(s >= 9 for s in nps) - sum(s <= 6 for s in nps)) / len(nps),
            "csat": sum(s >= 4 for s in csat) / len(csat)}


def test_a_whole_day_keeps_stickiness_conversion_and_answers_in_range() -> None:
    model = EventModel(users=3000, seed=4)
    plan = model.plan_day(DAY_START + timedelta(hours=9), DAY_START, DAY_END, days=31)
    everything = plan.history + [e for _, e in plan.rest]
    today = _day_of(plan.day_start_ms)
    by_day: dict[int, set[str]] = collections.defaultdict(set)
    for e in everything:
        if e["type"] == "activity":
            by_day[_day_of(ts_ms(e))].add(e["user_id"])

    def stickiness(day: int) -> float:
        mau = set().union(*(by_day[day - k] for k in range(30)))
        return len(by_day[day]) / len(mau)

    assert abs(stickiness(today) - stickiness(today - 1)) < 0.03
    now, before = _ratio(everything, today - 29, today), _ratio(everything, today - 30, today - 1)
    assert abs(now["conversion"] - before["conversion"]) < 0.005
    assert abs(now["nps"] - before["nps"]) < 5
    assert abs(now["csat"] - before["csat"]) < 0.03


def test_a_day_plan_splits_at_now() -> None:
    model = EventModel(users=1000, seed=5)
    now = DAY_START + timedelta(hours=15, minutes=30)
    plan = model.plan_day(now, DAY_START, DAY_END, days=3)
    now_ms = int(now.timestamp() * 1000)
    assert all(ts_ms(e) <= now_ms for e in plan.history)
    rest_ms = [ms for ms, _ in plan.rest]
    assert rest_ms == sorted(rest_ms)
    assert all(now_ms < ms < plan.day_end_ms for ms in rest_ms)
    # The plan's times are the events' own (to the second: some shapes carry no ms).
    assert all(abs(ts_ms(e) - ms) < 1000 for ms, e in plan.rest)
    assert {"activity", "visit", "survey"} <= {e["type"] for _, e in plan.rest}
    assert {e["type"] for _, e in plan.sessions} == set(EVENT_TYPES) - {"signup",
                                                                       "cancellation"}
    assert all(plan.day_start_ms <= ms < plan.day_end_ms for ms, _ in plan.sessions)
    assert all(contract_problem(e) is None for e in plan.history)
    again = model.plan_day(now, DAY_START, DAY_END, days=3)
    assert again == plan  # one seeded draw
    with pytest.raises(ValueError):
        model.plan_day(DAY_END, DAY_START, DAY_END)


def test_the_compressed_day_plays_the_rest_then_only_todays_users() -> None:
    model = EventModel(users=1000, seed=6)
    now = DAY_START + timedelta(hours=12)
    plan = model.plan_day(now, DAY_START, DAY_END, days=2)
    speed = 1440.0 / 10  # a day in ten minutes, the demo's default
    player = CompressedDay(plan, speed, seed=6)
    wall = int(datetime.now(UTC).timestamp() * 1000)
    played: list[Event] = []
    seen_users: list[int] = []
    today_users = _active(plan.history, _day_of(plan.day_start_ms)) | {
        e["user_id"] for _, e in plan.rest if e["type"] == "activity"}
    elapsed = 0.0
    while elapsed < 15 * 60:  # the rest of the day (5 min), then 10 min of replay
        due = player.due(elapsed, wall + int(elapsed * 1000))
        # Each event comes when the simulated clock has reached its moment, not before.
        assert len(played) + len(due) <= len(plan.rest) or player.played(elapsed)
        played += due
        seen_users.append(len({e["user_id"] for e in played if e["type"] == "activity"}))
        elapsed += 0.5
    # The rest of the day, in order and stamped with the wall clock of its tick.
    rest = played[: len(plan.rest)]
    assert [e["event_id"] for e in rest] == [e["event_id"] for _, e in plan.rest]
    assert all(contract_problem(e) is None for e in played)
    assert all(wall <= ts_ms(e) <= wall + 15 * 60_000 for e in played)
    # Then more of the same day's sessions: fresh ids, no signups or cancellations, and
    # not one user who is not active today.
    replay = played[len(plan.rest):]
    assert len(replay) > len(plan.sessions) // 2
    assert len({e["event_id"] for e in played}) == len(played)
    assert {e["type"] for e in replay} <= set(EVENT_TYPES) - {"signup", "cancellation"}
    assert {e["user_id"] for e in played if e["type"] == "activity"} <= today_users
    assert seen_users == sorted(seen_users)  # today's active users never fall
    # The users played by four minutes at this speed are a subset of the whole day's, so
    # the whole day bounds them: checking the whole day (faster) checks four minutes.
    at_four = CompressedDay(plan, speed).due(240.0, wall)
    assert {e["user_id"] for e in at_four} <= {e["user_id"] for _, e in plan.rest}


def test_a_stalled_play_does_not_catch_up_on_missed_replays() -> None:
    plan = EventModel(users=300, seed=6).plan_day(DAY_START + timedelta(hours=23), DAY_START,
                                                  DAY_END, days=1)
    player = CompressedDay(plan, 1440.0, seed=6)  # a day a minute
    wall = int(datetime.now(UTC).timestamp() * 1000)
    first = player.due(30.0, wall)  # the last hour and about half a replay
    assert len(plan.rest) < len(first) < len(plan.rest) + len(plan.sessions)
    later = player.due(30.0 + 3600, wall)  # an hour later: 60 replays missed
    assert len(later) < len(plan.sessions)


def test_the_next_days_plan_keeps_the_population() -> None:
    """At the processor's midnight the demo plays the next day, its population anchored
    where the first day's was: no signup or cancellation, about as many active users."""
    model = EventModel(users=3000, seed=8)
    first = model.plan_day(DAY_START + timedelta(hours=15), DAY_START, DAY_END, days=1)
    after = model.plan_day(DAY_END, DAY_END, DAY_END + timedelta(days=1), days=0,
                           baseline=False, anchor=DAY_END)
    events = after.history + [e for _, e in after.rest]
    assert {_day_of(ts_ms(e)) for e in events} == {_day_of(after.day_start_ms)}
    assert not {e["type"] for e in events} & {"signup", "cancellation"}
    today = _active(first.history, _day_of(first.day_start_ms)) | {
        e["user_id"] for _, e in first.rest if e["type"] == "activity"}
    tomorrow = _active(events, _day_of(after.day_start_ms))
    assert 0.9 * len(today) <= len(tomorrow) <= 1.1 * len(today)


def test_restamp_keeps_the_shape_of_ts() -> None:
    ms = int(datetime(2026, 11, 22, 10, 0, 5, 123_000, tzinfo=UTC).timestamp() * 1000)
    base = {"event_id": "e", "type": "activity", "user_id": "u"}
    cases = {
        1_700_000_000_000: ms,
        "2026-01-01T00:00:00Z": "2026-11-22T10:00:05Z",
        "2026-01-01T00:00:00.000Z": "2026-11-22T10:00:05.123Z",
        "2026-01-01T05:30:00+05:30": "2026-11-22T15:30:05+05:30",
        "2025-12-31T19:00:00-05:00": "2026-11-22T05:00:05-05:00",
    }
    for before, after in cases.items():
        event = {**base, "ts": before}
        moved = restamp(event, ms, "f")
        assert moved["ts"] == after and moved["event_id"] == "f"
        assert ts_ms(moved) // 1000 == ms // 1000
        assert event["ts"] == before  # the plan is left as it was

"""The synthetic event model: contract validity, determinism, time range and mix."""

from __future__ import annotations

import asyncio
import collections
import itertools
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
    Event,
    EventModel,
    bad_message,
    topic_for,
)
from stream.demo.producer import produce_events, run_live

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


def test_live_stream_is_valid_current_and_mixed() -> None:
    model = EventModel(users=1000, seed=5)
    clock = iter(itertools.count())

    def now_fn() -> datetime:
        return NOW + timedelta(milliseconds=next(clock))

    events = list(itertools.islice(model.live(now_fn), 60_000))
    assert all(contract_problem(e) is None for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    start = int(NOW.timestamp() * 1000)
    # ts is the clock at the time of the event (whole seconds for backend-style ts).
    assert all(0 <= ts_ms(e) - start <= 60_000 for e in events)
    types = collections.Counter(e["type"] for e in events)
    assert types["activity"] / len(events) > 0.7
    assert 0 < types["cancellation"] < types["signup"] < types["conversion"] < types["visit"]
    csat = [e["score"] for e in events if e["type"] == "survey" and e["survey"] == "csat"]
    assert 0.6 <= sum(s >= 4 for s in csat) / len(csat) <= 0.95
    # The live stream is reproducible too.
    clock = iter(itertools.count())
    again = list(itertools.islice(EventModel(users=1000, seed=5).live(now_fn), 1000))
    assert again == events[:1000]


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


async def test_run_live_keeps_the_rate_and_injects_bad_messages() -> None:
    producer = FakeProducer()
    stop = asyncio.Event()
    model = EventModel(users=300, seed=1)
    task = asyncio.create_task(run_live(producer, model, 2000.0, stop, bad_every=100))
    await asyncio.sleep(1.5)
    stop.set()
    sent = await task
    assert sent == len(producer.sent)
    # Generous bounds: a loaded CI machine may stall the event loop for a moment.
    assert 2000 * 1.5 * 0.8 <= sent <= 2000 * 1.5 * 1.1
    now = datetime.now(UTC)
    reasons = [dead_letter_reason(value, now) for _, value, _ in producer.sent]
    assert sum(r is not None for r in reasons) == sent // 100
    assert {t for t, _, _ in producer.sent} == set(TOPICS)

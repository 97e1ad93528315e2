"""A deterministic multi-week dataset of raw messages, relative to a given ``now``.

:func:`generate` returns every message as ``(topic, key, value)`` in the order it should
be produced, and the number of dead letters expected per reason. The same ``seed``,
``now``, ``size`` and ``timezone`` always give the same bytes.

What is in it:

- regular traffic: a few hundred to a few thousand users with activity of varying
  intensity over the last ~45 days, signups over the whole accepted horizon (most in the
  last 90 days), cancellations and re-signups, visits and conversions of several
  campaigns (``spring`` and ``Spring`` are different campaigns), NPS answers 0-10 and
  CSAT answers 1-5, props on some events, unicode user ids;
- ``ts`` as epoch-millisecond ints and as RFC 3339 strings with offsets from -12:00 to
  +14:00, with and without fractions;
- every event on a random one of the four topics, whatever its type; keys are the
  ``user_id`` mostly and missing sometimes;
- duplicates: same ``event_id`` with the same content (anywhere, any type), and same
  ``event_id`` with different content (non-``activity`` only, produced after the
  original on the same topic with the same key, so "first one folded wins" is well
  defined);
- hand-made edge cases: equal-``ts`` signup/cancellation ties, a cancellation produced
  before the signup it follows (on another topic), re-signups, signups exactly at and
  1 ms before the churn window start, first-week cohort edges (days 7, 8, 37, 38;
  activity at 00:00:00.000 and 23:59:59.999), window edges for DAU/WAU/MAU, conversion
  and surveys, a signup near the lateness limit, fields that do not apply to the type;
- bad input of every reason (see :data:`BAD_CATALOGUE`), plus ``late`` and ``future``
  events; ``future`` ones are at least a day ahead and ``late`` ones at least a day
  beyond the limit.

Stability: valid events are dated no later than one minute before ``now``, so the
figures stay the same for any processor clock from ``now`` to :attr:`Dataset.stable_until`
(the next local midnight, or earlier if the oldest valid event would become late).
A test should generate with its current clock and check :meth:`Dataset.is_stable_at`
(or skip when ``now`` is too close to midnight).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

DEFAULT_TOPICS = (
    "engagement.activity",
    "engagement.conversions",
    "engagement.cancellations",
    "engagement.surveys",
)
DEAD_LETTER_TOPIC = "engagement.dead-letter"
REASONS = ("invalid_json", "invalid_event", "late", "future")
CAMPAIGNS = ("spring", "Spring", "summer-sale", "referral", "black-friday", "newsletter")

Message = tuple[str, bytes | None, bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
_OFFSETS = ("Z", "+00:00", "+01:00", "+05:30", "-08:00", "-03:30", "+14:00", "-12:00")


def _to_ms(instant: datetime) -> int:
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _good(**overrides: Any) -> bytes:
    """A valid activity event with ``overrides`` applied (``None`` deletes the key
    when passed as the string ``"<missing>"``)."""
    obj: dict[str, Any] = {
        "event_id": "bad-base",
        "type": "activity",
        "user_id": "u-bad",
        "ts": "2026-01-01T00:00:00Z",
    }
    for name, value in overrides.items():
        if value == "<missing>":
            obj.pop(name, None)
        else:
            obj[name] = value
    return json.dumps(obj).encode()


def _survey(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {"type": "survey", "survey": "nps", "score": 9}
    fields.update(overrides)
    return _good(**fields)


# Bad messages whose reason does not depend on the clock. The placeholder ts above is
# replaced by a valid recent one when the message is built (see _fill_ts).
BAD_CATALOGUE: tuple[tuple[str, bytes], ...] = (
    ("invalid_json", b""),
    ("invalid_json", b"   "),
    ("invalid_json", b"not json"),
    ("invalid_json", b"{"),
    ("invalid_json", b'{"event_id": "x",'),
    ("invalid_json", b"[1, 2"),
    ("invalid_json", b"{'event_id': 'single quotes'}"),
    ("invalid_json", b'{"a": 1} trailing'),
    ("invalid_json", b"{}{}"),
    ("invalid_json", b"\xff\xfe\x00\x01"),
    ("invalid_json", b'{"event_id": "\xc3\x28", "type": "activity"}'),
    ("invalid_json", b'{"event_id": "\xed\xa0\x80"}'),
    ("invalid_json", b"NaN"),
    ("invalid_json", b"Infinity"),
    ("invalid_json", b"-Infinity"),
    (
        "invalid_json",
        b'{"event_id": "nan-ts", "type": "activity", "user_id": "u1", "ts": NaN}',
    ),
    (
        "invalid_json",
        b'{"event_id": "inf-extra", "type": "activity", "user_id": "u1",'
        b' "ts": 1700000000000, "weight": Infinity}',
    ),
    ("invalid_event", b"[]"),
    ("invalid_event", b'"just a string"'),
    ("invalid_event", b"42"),
    ("invalid_event", b"true"),
    ("invalid_event", b"[{}]"),
    ("invalid_event", b"{}"),
    ("invalid_event", _good(event_id="<missing>")),
    ("invalid_event", _good(type="<missing>")),
    ("invalid_event", _good(user_id="<missing>")),
    ("invalid_event", _good(ts="<missing>")),
    ("invalid_event", _good(event_id=None)),
    ("invalid_event", _good(type=None)),
    ("invalid_event", _good(user_id=None)),
    ("invalid_event", _good(ts=None)),
    ("invalid_event", _good(event_id="")),
    ("invalid_event", _good(type="")),
    ("invalid_event", _good(user_id="")),
    ("invalid_event", _good(ts="")),
    ("invalid_event", _good(event_id=5)),
    ("invalid_event", _good(type=["activity"])),
    ("invalid_event", _good(user_id=7)),
    ("invalid_event", _good(user_id={"id": "u"})),
    ("invalid_event", _good(ts=1.7e12)),
    ("invalid_event", _good(ts=True)),
    ("invalid_event", _good(ts={"ms": 1})),
    ("invalid_event", _good(ts="2026-11-20T10:00:00")),
    ("invalid_event", _good(ts="2026-11-20 10:00:00Z")),
    ("invalid_event", _good(ts="2026-11-20")),
    ("invalid_event", _good(ts="yesterday")),
    ("invalid_event", _good(ts="2026-13-01T00:00:00Z")),
    ("invalid_event", _good(ts="2026-02-30T00:00:00Z")),
    ("invalid_event", _good(ts="1700000000000")),
    ("invalid_event", _good(ts="2026-11-20T10:00:00+0100")),
    ("invalid_event", _good(type="Activity")),
    ("invalid_event", _good(type="purchase")),
    ("invalid_event", _good(type="visit")),
    ("invalid_event", _good(type="visit", campaign="")),
    ("invalid_event", _good(type="visit", campaign=5)),
    ("invalid_event", _good(type="conversion", campaign=None)),
    ("invalid_event", _good(type="conversion", campaign=["spring"])),
    ("invalid_event", _good(type="survey", score=9)),
    ("invalid_event", _survey(survey="NPS")),
    ("invalid_event", _survey(survey="ces")),
    ("invalid_event", _survey(score=11)),
    ("invalid_event", _survey(score=-1)),
    ("invalid_event", _survey(survey="csat", score=0)),
    ("invalid_event", _survey(survey="csat", score=6)),
    ("invalid_event", _survey(score=9.5)),
    ("invalid_event", _survey(score=9.0)),
    ("invalid_event", _survey(score="9")),
    ("invalid_event", _survey(score=True)),
    ("invalid_event", _survey(score="<missing>")),
    ("invalid_event", _survey(score=None)),
    ("invalid_event", _good(props="plan=pro")),
    ("invalid_event", _good(props=["pro"])),
    ("invalid_event", _good(props={"plan": 1})),
    ("invalid_event", _good(props={"plan": None})),
    ("invalid_event", _good(props={"plan": {"tier": "pro"}})),
    ("invalid_event", _good(event_id="e" * 129)),
    ("invalid_event", _good(user_id="u" * 257)),
)


@dataclass
class _Msg:
    topic: str
    key: bytes | None
    value: bytes
    reason: str | None = None


@dataclass
class Dataset:
    """Raw messages in production order and what the processor must dead-letter."""

    now: datetime
    timezone: str
    max_lateness_days: int
    messages: list[Message]
    expected_dead_letters: dict[str, int]
    stable_until: datetime
    seed: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def values(self) -> list[bytes | None]:
        """Message values in production order (what the oracle takes)."""
        return [value for _, _, value in self.messages]

    def on_topics(self, mapping: dict[str, str]) -> list[Message]:
        """The messages with topic names replaced through ``mapping`` (e.g. to the
        per-test topic names); topics not in ``mapping`` are kept."""
        return [(mapping.get(t, t), k, v) for t, k, v in self.messages]

    def is_stable_at(self, clock: datetime) -> bool:
        """True when a processor with this clock must compute the same figures as one
        whose clock is ``now``."""
        return self.now <= clock < self.stable_until


class _Builder:
    def __init__(
        self,
        now: datetime,
        seed: int,
        timezone: str,
        max_lateness_days: int,
        topics: tuple[str, ...],
    ) -> None:
        self.rng = random.Random(seed)
        self.tz = ZoneInfo(timezone)
        self.now = now
        self.now_ms = _to_ms(now)
        self.today = now.astimezone(self.tz).date()
        self.lateness_days = max_lateness_days
        self.topics = topics
        self.msgs: list[_Msg] = []
        self.before: list[tuple[int, int]] = []  # (a, b): a must be produced before b
        self.counter = 0
        self.oldest_valid_ms = self.now_ms
        self.earliest_future_ms: int | None = None

    # time -------------------------------------------------------------------------

    def midnight_ms(self, days_ago: int) -> int:
        """Epoch ms of 00:00 local time of the day ``days_ago`` days before today."""
        day = self.today - timedelta(days=days_ago)
        return _to_ms(datetime.combine(day, time(0), tzinfo=self.tz))

    def at(self, days_ago: int, ms_in_day: int) -> int:
        """Epoch ms at ``ms_in_day`` after local midnight of that day (clamped so it
        stays on that day and not after one minute before now)."""
        start = self.midnight_ms(days_ago)
        end = self.midnight_ms(days_ago - 1) - 1
        ts = min(start + ms_in_day, end)
        if days_ago <= 0:
            ts = min(ts, self.now_ms - _MINUTE_MS)
        return ts

    def last_ms(self, days_ago: int) -> int:
        """23:59:59.999 local of that day."""
        return self.midnight_ms(days_ago - 1) - 1

    def random_ts(self, lo_days: int, hi_days: int) -> int:
        """A random time on a day ``lo_days``..``hi_days`` ago, at least 10 minutes from
        its midnights and at least a minute before now."""
        for _ in range(20):
            k = self.rng.randint(lo_days, hi_days)
            start = self.midnight_ms(k)
            end = self.midnight_ms(k - 1)
            lo = start + 10 * _MINUTE_MS
            hi = end - 10 * _MINUTE_MS
            if k == 0:
                hi = min(hi, self.now_ms - _MINUTE_MS)
            if hi > lo:
                return self.rng.randint(lo, hi)
        return self.midnight_ms(1) + 12 * _HOUR_MS

    def fmt_ts(self, ms: int) -> int | str:
        """Epoch ms as an int or as an RFC 3339 string with a random offset."""
        if self.rng.random() < 0.5:
            return ms
        offset = self.rng.choice(_OFFSETS)
        if offset == "Z":
            delta = timedelta(0)
        else:
            sign = 1 if offset[0] == "+" else -1
            delta = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        local = _from_ms(ms).astimezone(dt_timezone(delta))
        text = local.strftime("%Y-%m-%dT%H:%M:%S")
        if ms % 1000 or self.rng.random() < 0.2:
            digits = f"{ms % 1000:03d}"
            text += "." + (digits + "000" if self.rng.random() < 0.3 else digits)
        return text + offset

    # messages ---------------------------------------------------------------------

    def new_id(self, etype: str) -> str:
        self.counter += 1
        return f"{etype[:3]}-{self.counter:07d}-{self.rng.getrandbits(32):08x}"

    def event(self, etype: str, user: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "event_id": self.new_id(etype),
            "type": etype,
            "user_id": user,
            "ts": self.fmt_ts(ts_ms),
        }
        obj.update(fields)
        roll = self.rng.random()
        if roll < 0.25:
            obj["props"] = {
                "plan": self.rng.choice(["free", "pro", "team"]),
                "platform": self.rng.choice(["web", "ios", "android"]),
            }
        elif roll < 0.28:
            obj["props"] = None
        elif roll < 0.30:
            obj["props"] = {}
        elif roll < 0.32:
            obj["source"] = "importer"  # unknown extra field
        keys = list(obj)
        self.rng.shuffle(keys)
        return {k: obj[k] for k in keys}

    def encode(self, obj: Any) -> bytes:
        compact = self.rng.random() < 0.5
        text = json.dumps(
            obj,
            ensure_ascii=self.rng.random() < 0.5,
            separators=(",", ":") if compact else (", ", ": "),
        )
        return text.encode("utf-8")

    def add(
        self,
        obj: dict[str, Any] | bytes,
        *,
        topic: str | None = None,
        key: bytes | str | None = "user",
        reason: str | None = None,
        ts_ms: int | None = None,
    ) -> int:
        """Append one message; returns its index. ``key="user"`` means the user id
        (or no key, 10% of the time)."""
        if isinstance(obj, dict):
            value = self.encode(obj)
            if key == "user":
                key = str(obj["user_id"]).encode() if self.rng.random() < 0.9 else None
        else:
            value = obj
            if key == "user":
                key = None
        assert not isinstance(key, str)
        if reason is None and ts_ms is not None:
            self.oldest_valid_ms = min(self.oldest_valid_ms, ts_ms)
        if reason == "future" and ts_ms is not None:
            self.earliest_future_ms = min(self.earliest_future_ms or ts_ms, ts_ms)
        self.msgs.append(_Msg(topic or self.rng.choice(self.topics), key, value, reason))
        return len(self.msgs) - 1

    def emit(self, etype: str, user: str, ts_ms: int, **fields: Any) -> int:
        return self.add(self.event(etype, user, ts_ms, **fields), ts_ms=ts_ms)


def generate(
    now: datetime | None = None,
    *,
    size: int = 20_000,
    seed: int = 0,
    timezone: str = "UTC",
    max_lateness_days: int = 400,
    topics: tuple[str, ...] = DEFAULT_TOPICS,
) -> Dataset:
    """Build the dataset.

    Args:
        now: the processor clock the figures refer to (aware; default the current time,
            truncated to milliseconds).
        size: approximate number of messages (default 20 000; at least ~400).
        seed: random seed; the output is a pure function of the arguments.
        timezone: IANA zone of the calendar days (``STREAM_TIMEZONE``).
        max_lateness_days: ``STREAM_MAX_LATENESS_DAYS`` (at least 60).
        topics: the input topics to spread messages over.
    """
    if now is None:
        now = datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if max_lateness_days < 60:
        raise ValueError("max_lateness_days must be at least 60 for this dataset")
    b = _Builder(now, seed, timezone, max_lateness_days, topics)
    edge_users = _edge_cases(b)
    normal_budget = max(200, int(size * 0.93) - len(b.msgs))
    n_users = max(60, normal_budget // 8)
    _regular_traffic(b, n_users, normal_budget)
    _duplicates(b, max(8, size * 3 // 100))
    _bad_input(b, max(len(BAD_CATALOGUE) + 8, size * 3 // 100))
    messages, reasons = _order(b)
    next_midnight = datetime.combine(b.today + timedelta(days=1), time(0), tzinfo=b.tz)
    limits = [
        next_midnight.astimezone(UTC),
        _from_ms(b.oldest_valid_ms + max_lateness_days * _DAY_MS),
    ]
    if b.earliest_future_ms is not None:
        limits.append(_from_ms(b.earliest_future_ms - 5 * _MINUTE_MS))
    return Dataset(
        now=now,
        timezone=timezone,
        max_lateness_days=max_lateness_days,
        messages=messages,
        expected_dead_letters={r: reasons[r] for r in REASONS},
        stable_until=min(limits),
        seed=seed,
        notes={"edge_users": edge_users, "users": n_users},
    )


def _edge_cases(b: _Builder) -> list[str]:
    """Hand-made corner cases, each on users of their own."""
    users: list[str] = []

    def user(name: str) -> str:
        users.append(f"edge-{name}")
        return f"edge-{name}"

    churn_start = b.midnight_ms(29)

    # Customer status: equal ts, cancellation wins; one ms earlier, signup wins.
    t = b.at(50, 9 * _HOUR_MS)
    u = user("tie-cancel-wins")
    b.emit("signup", u, t)
    b.emit("cancellation", u, t)
    u = user("signup-1ms-later")
    b.emit("signup", u, t)
    b.emit("cancellation", u, t - 1)
    # An equal-ts tie before the churn window: not a customer at its start either.
    u = user("tie-before-churn-start")
    t = churn_start - 3 * _DAY_MS
    b.emit("signup", u, t)
    b.emit("cancellation", u, t)

    # A cancellation produced before the (earlier) signup, on another topic.
    t = b.at(40, 14 * _HOUR_MS)
    u = user("cancel-produced-first")
    c = b.add(b.event("cancellation", u, t + _HOUR_MS), topic=b.topics[2], ts_ms=t)
    s = b.add(b.event("signup", u, t), topic=b.topics[0], ts_ms=t)
    b.before.append((c, s))
    u = user("old-cancel-produced-first")
    c = b.add(b.event("cancellation", u, t), topic=b.topics[2], ts_ms=t)
    s = b.add(b.event("signup", u, t + _HOUR_MS), topic=b.topics[1], ts_ms=t)
    b.before.append((c, s))

    # Churn window edges (start = 00:00 local of the day 29 days before today).
    u = user("resigned")  # customer at start, churned, customer again now
    b.emit("signup", u, churn_start - 60 * _DAY_MS)
    b.emit("cancellation", u, churn_start + 5 * _DAY_MS)
    b.emit("signup", u, churn_start + 10 * _DAY_MS)
    u = user("signup-at-churn-start")  # not before the instant: not in the denominator
    b.emit("signup", u, churn_start)
    u = user("signup-1ms-before-churn-start")
    b.emit("signup", u, churn_start - 1)
    u = user("cancel-at-churn-start")  # in the denominator and churned
    b.emit("signup", u, churn_start - _DAY_MS)
    b.emit("cancellation", u, churn_start)
    u = user("cancel-1ms-before-churn-start")  # not a customer at the start
    b.emit("signup", u, churn_start - 2 * _DAY_MS)
    b.emit("cancellation", u, churn_start - 1)
    u = user("signup-near-lateness-limit")  # a customer of long ago still counts
    b.emit("signup", u, b.now_ms - b.lateness_days * _DAY_MS + 6 * _HOUR_MS)

    # First-week cohort: signup day s in today-37..today-8, activity on s+1..s+7.
    noon = 12 * _HOUR_MS
    u = user("fw-day8-active-next-midnight")
    b.emit("signup", u, b.at(8, noon))
    b.emit("activity", u, b.midnight_ms(7))
    u = user("fw-day37-active-day7-last-ms")
    b.emit("signup", u, b.last_ms(37))
    b.emit("activity", u, b.last_ms(30))
    u = user("fw-day37-active-day0-and-day8")
    b.emit("signup", u, b.at(37, 6 * _HOUR_MS))
    b.emit("activity", u, b.last_ms(37))
    b.emit("activity", u, b.midnight_ms(29))
    u = user("fw-day7-not-cohort")
    b.emit("signup", u, b.at(7, noon))
    b.emit("activity", u, b.at(6, noon))
    u = user("fw-day38-not-cohort")
    b.emit("signup", u, b.last_ms(38))
    b.emit("activity", u, b.at(37, noon))
    u = user("fw-earliest-signup-counts")
    b.emit("signup", u, b.at(30, noon))
    b.emit("signup", u, b.at(20, noon))
    b.emit("activity", u, b.at(19, noon))
    u = user("fw-cancelled-since")
    b.emit("signup", u, b.at(20, noon))
    b.emit("cancellation", u, b.at(18, noon))
    b.emit("activity", u, b.at(15, noon))
    u = user("fw-earlier-signup-out-of-range")
    b.emit("signup", u, b.at(38, noon))
    b.emit("signup", u, b.at(25, noon))
    b.emit("activity", u, b.at(24, noon))

    # Active-user window edges.
    b.emit("activity", user("dau-today-midnight"), b.midnight_ms(0))
    b.emit("activity", user("yesterday-last-ms"), b.last_ms(1))
    b.emit("activity", user("wau-first-day"), b.midnight_ms(6))
    b.emit("activity", user("wau-day-before"), b.last_ms(7))
    b.emit("activity", user("mau-first-day"), b.midnight_ms(29))
    b.emit("activity", user("mau-day-before"), b.last_ms(30))
    b.emit("activity", user("prev-month-window-first-day"), b.midnight_ms(30))
    first_of_month = (b.today - b.today.replace(day=1)).days
    b.emit("activity", user("calendar-month-first-day"), b.midnight_ms(first_of_month))
    b.emit("activity", user("calendar-month-day-before"), b.last_ms(first_of_month + 1))

    # Conversion and surveys at the 30-day window edges; a campaign without visits.
    u = user("campaign-edges")
    b.emit("visit", u, b.midnight_ms(29), campaign="edge-campaign")
    b.emit("visit", u, b.last_ms(30), campaign="edge-campaign")
    b.emit("conversion", u, b.midnight_ms(29), campaign="edge-campaign")
    b.emit("conversion", u, b.last_ms(30), campaign="edge-campaign")
    b.emit("conversion", u, b.at(3, noon), campaign="conversions-only")
    b.emit("visit", u, b.at(2, noon), campaign="EDGE-CAMPAIGN")
    u = user("survey-edges")
    b.emit("survey", u, b.midnight_ms(29), survey="nps", score=10)
    b.emit("survey", u, b.last_ms(30), survey="nps", score=0)
    b.emit("survey", u, b.midnight_ms(29), survey="csat", score=5)
    b.emit("survey", u, b.last_ms(30), survey="csat", score=1)

    # Fields that do not apply to the type are ignored; limits of id lengths.
    u = user("irrelevant-fields")
    b.emit("activity", u, b.at(1, noon), campaign=5, score="high", survey=1)
    b.emit("signup", u, b.at(1, noon), campaign=None, score=11)
    b.emit("visit", u, b.at(1, noon), campaign="spring", survey="NPS", score=-4)
    long_id = "x" * 128
    b.add(
        {"event_id": long_id, "type": "activity", "user_id": "y" * 256, "ts": b.at(0, 0)},
        ts_ms=b.at(0, 0),
    )
    users.append("y" * 256)
    return users


def _regular_traffic(b: _Builder, n_users: int, budget: int) -> None:
    rng = b.rng
    users = [
        f"u{i:05d}" if i % 29 else rng.choice(["usér", "用户", "ユーザー"]) + f"-{i}"
        for i in range(n_users)
    ]
    weights = [rng.choice([0.2, 1.0, 1.0, 3.0, 8.0]) for _ in users]
    start = len(b.msgs)

    # Customers: signups over the horizon (mostly recent), cancellations, re-signups.
    horizon = b.lateness_days - 2
    first_signups: dict[str, int] = {}
    for u in users:
        if rng.random() >= 0.6:
            continue
        lo, hi = (1, 60) if rng.random() < 0.5 else (1, horizon)
        t = b.random_ts(lo, hi)
        first_signups[u] = t
        b.emit("signup", u, t)
        if rng.random() < 0.3:
            cancel = min(t + rng.randint(1, 90) * _DAY_MS // 3, b.now_ms - _MINUTE_MS)
            b.emit("cancellation", u, cancel)
            if rng.random() < 0.3 and cancel < b.now_ms - 2 * _DAY_MS:
                again = rng.randint(cancel + _HOUR_MS, b.now_ms - _DAY_MS)
                b.emit("signup", u, again)

    # First-week activity for a part of the recent signups.
    for u, t in first_signups.items():
        if b.now_ms - t < 45 * _DAY_MS and rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                ts = t + rng.randint(_DAY_MS, 7 * _DAY_MS)
                if ts < b.now_ms - _MINUTE_MS:
                    b.emit("activity", u, ts)

    remaining = max(0, budget - (len(b.msgs) - start))
    kinds: list[tuple[str, float]] = [
        ("activity", 0.66),
        ("visit", 0.17),
        ("conversion", 0.05),
        ("survey", 0.12),
    ]
    campaign_weights = [5, 1, 3, 2, 4, 1]
    names = [k for k, _ in kinds]
    shares = [w for _, w in kinds]
    for _ in range(remaining):
        kind = rng.choices(names, shares)[0]
        u = rng.choices(users, weights)[0]
        # Mostly the last 10 days, some up to 45 days back (beyond every window).
        t = b.random_ts(0, 10) if rng.random() < 0.6 else b.random_ts(0, 45)
        if kind == "survey":
            _emit_survey(b, u, t)
        elif kind in ("visit", "conversion"):
            b.emit(kind, u, t, campaign=rng.choices(CAMPAIGNS, campaign_weights)[0])
        else:
            b.emit(kind, u, t)


def _emit_survey(b: _Builder, user: str, ts: int) -> None:
    if b.rng.random() < 0.6:
        b.emit("survey", user, ts, survey="nps", score=b.rng.randint(0, 10))
    else:
        b.emit("survey", user, ts, survey="csat", score=b.rng.randint(1, 5))


def _duplicates(b: _Builder, count: int) -> None:
    """Exact repeats anywhere; changed repeats after the original, same topic and key."""
    rng = b.rng
    constrained = {i for pair in b.before for i in pair}
    originals = [i for i, m in enumerate(b.msgs) if m.reason is None and i not in constrained]
    picked = rng.sample(originals, min(count, len(originals)))
    for n, i in enumerate(picked):
        orig = b.msgs[i]
        obj = json.loads(orig.value)
        if n % 3 or obj["type"] == "activity":
            # Exact repeat (same bytes), on any topic, any key.
            b.add(orig.value, topic=rng.choice(b.topics), key=orig.key)
            continue
        changed = dict(obj)
        etype = obj["type"]
        if etype == "signup":
            changed["type"] = "cancellation"
        elif etype == "cancellation":
            changed["type"] = "signup"
        elif etype in ("visit", "conversion"):
            changed["campaign"] = rng.choice(["spring", "newsletter", "dup-only-campaign"])
            changed["type"] = "conversion" if etype == "visit" else "visit"
        elif etype == "survey":
            changed["score"] = 0 if obj["score"] != 0 else 1
            changed["survey"] = "nps"
        if rng.random() < 0.3:
            changed["user_id"] = obj["user_id"] + "-other"
        if orig.key is None:
            orig.key = str(obj["user_id"]).encode()
        j = b.add(b.encode(changed), topic=orig.topic, key=orig.key)
        b.before.append((i, j))


def _bad_input(b: _Builder, count: int) -> None:
    rng = b.rng
    items: list[tuple[str, bytes]] = list(BAD_CATALOGUE)
    extra = max(0, count - len(items) - 2 * max(4, count // 10))
    items += [rng.choice(BAD_CATALOGUE) for _ in range(extra)]
    for reason, value in items:
        b.add(_fill_ts(b, value), reason=reason)
    for n in range(max(4, count // 10)):
        # Late: at least a day beyond the limit (1970 for one of them).
        ts = b.now_ms - (b.lateness_days + 1 + rng.randint(0, 60)) * _DAY_MS
        if n == 0:
            ts = 0
        etype = rng.choice(["activity", "signup", "visit", "survey"])
        b.add(_valid_of_type(b, etype, ts), reason="late")
        # Future: at least a day ahead.
        ts = b.now_ms + _DAY_MS + rng.randint(0, 20 * _DAY_MS)
        etype = rng.choice(["activity", "cancellation", "conversion", "survey"])
        b.add(_valid_of_type(b, etype, ts), reason="future", ts_ms=ts)


def _valid_of_type(b: _Builder, etype: str, ts: int) -> dict[str, Any]:
    user = f"u-out-of-range-{b.rng.randint(0, 50)}"
    if etype in ("visit", "conversion"):
        return b.event(etype, user, ts, campaign="spring")
    if etype == "survey":
        return b.event(etype, user, ts, survey="csat", score=4)
    return b.event(etype, user, ts)


def _fill_ts(b: _Builder, value: bytes) -> bytes:
    """Give catalogue messages that carry the placeholder ts a valid recent one, so
    their only fault is the intended one."""
    placeholder = b'"2026-01-01T00:00:00Z"'
    if placeholder not in value:
        return value
    recent = json.dumps(b.fmt_ts(b.random_ts(0, 20))).encode()
    return value.replace(placeholder, recent)


def _order(b: _Builder) -> tuple[list[Message], Counter[str]]:
    order = list(range(len(b.msgs)))
    b.rng.shuffle(order)
    position = {m: p for p, m in enumerate(order)}
    for first, second in b.before:
        if position[first] > position[second]:
            pf, ps = position[first], position[second]
            order[pf], order[ps] = second, first
            position[first], position[second] = ps, pf
    messages = [(b.msgs[i].topic, b.msgs[i].key, b.msgs[i].value) for i in order]
    reasons = Counter(m.reason for m in b.msgs if m.reason is not None)
    return messages, reasons


def generate_stable(size: int, seed: int = 0, minutes_needed: int = 10) -> Dataset:
    """A dataset relative to the current clock whose figures cannot change while a test
    runs for `minutes_needed` minutes: near local midnight it waits for the next day."""
    import time as _time

    data = generate(datetime.now(UTC), size=size, seed=seed)
    if data.stable_until - datetime.now(UTC) < timedelta(minutes=minutes_needed):
        _time.sleep(max(0.0, (data.stable_until - datetime.now(UTC)).total_seconds()) + 2)
        data = generate(datetime.now(UTC), size=size, seed=seed)
    return data

"""Brute-force reference for every figure of the contract, straight from the definitions.

Deliberately simple and slow: plain Python sets and loops, no Redis, no Kafka, and
nothing imported from ``stream``. Tests compare the processor's figures with
:func:`compute_figures` run on the same raw messages.

Conventions chosen where the contract leaves room (test data avoids these corners):

- A Kafka null value and the JSON text ``null`` are both dead-lettered: ``None`` and
  ``b""`` as ``invalid_json`` (not JSON at all); ``b"null"`` as ``invalid_event``
  (valid JSON that is not an object).
- ``ts`` strings need the ``T`` separator and an offset ``Z`` or ``+hh:mm``/``-hh:mm``
  (RFC 3339 allows ``t`` and ``z`` in lower case too; a space or ``+hhmm`` is not
  RFC 3339); fractions of a second are truncated to milliseconds, and every comparison
  of event times uses integer epoch milliseconds.
- JSON that escapes a lone UTF-16 surrogate (``"\\ud800"``) is not UTF-8 JSON:
  ``invalid_json``.
- An invalid event is dead-lettered as ``invalid_event`` even if its ``ts`` is also out
  of range; ``late``/``future`` are only given to otherwise valid events.
- Rolling windows are sets of calendar days ending with today; an accepted event dated
  tomorrow (at most 5 minutes ahead of the clock) is in no window, the calendar month
  included.
- Only ids of non-``activity`` events are remembered for de-duplication, and only once
  the event has been accepted (a dead-lettered first copy does not hide a later valid
  one); every ``activity`` is folded (folding it twice changes nothing).
- ``events_total`` and ``dead_letter_total`` always list every type and every reason,
  with 0 where nothing was seen; ``ignored_total`` is ``{"unmapped": 0}`` (native
  messages are never ignored).
- ``late_events_total`` counts by the one clock ``now``: every message is taken as
  folded on ``now``'s day (a test folding under several clocks adds up runs per clock).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo

EVENT_TYPES = ("activity", "signup", "visit", "conversion", "cancellation", "survey")
REASONS = ("invalid_json", "invalid_event", "late", "future")
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
DAY_MS = 24 * 3600 * 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


@dataclass(frozen=True)
class Event:
    """One accepted event, reduced to what the figures use."""

    event_id: str
    type: str
    user_id: str
    ts_ms: int
    campaign: str | None = None
    survey: str | None = None
    score: int | None = None
    props: tuple[tuple[str, str], ...] = ()


@dataclass
class Checked:
    """The outcome of validating one message: an event or a dead-letter reason."""

    event: Event | None = None
    reason: str | None = None
    detail: str = ""


@dataclass
class OracleRun:
    """Everything the oracle worked out from one list of messages."""

    figures: dict[str, Any]
    accepted: list[Event] = field(default_factory=list)  # valid, duplicates included
    folded: list[Event] = field(default_factory=list)  # what changes figures
    dead_letters: Counter[str] = field(default_factory=Counter)


def to_ms(instant: datetime) -> int:
    """Aware datetime -> epoch milliseconds (truncating sub-millisecond digits)."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds -> aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def is_json_int(value: object) -> TypeGuard[int]:
    """A JSON integer: Python int but not bool (``true`` parses as ``True``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_rfc3339_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with ``T`` and offset, else None."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction = m.group(7) or ""
    offset = m.group(8)
    try:
        local = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    if offset in ("Z", "z"):
        offset_minutes = 0
    else:
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return None
        offset_minutes = (oh * 60 + om) * (1 if offset[0] == "+" else -1)
    millis = int((fraction[1:] + "000")[:3]) if fraction else 0
    return to_ms(local.replace(tzinfo=dt_timezone(timedelta(minutes=offset_minutes)))) + millis


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _has_lone_surrogate(obj: object) -> bool:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v) for v in obj)
    return False


def _required_str(obj: dict[str, Any], name: str, max_len: int | None = None) -> str | None:
    value = obj.get(name)
    if not isinstance(value, str) or value == "":
        return None
    if max_len is not None and len(value) > max_len:
        return None
    return value


def check(value: bytes | None, now: datetime, max_lateness_days: int = 400) -> Checked:
    """Validate one raw message value per contract section 1 and the time limits of 2."""
    if value is None or value == b"":
        return Checked(reason="invalid_json", detail="empty or null value")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return Checked(reason="invalid_json", detail="not UTF-8")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return Checked(reason="invalid_json", detail=str(exc))
    if _has_lone_surrogate(obj):
        return Checked(reason="invalid_json", detail="lone surrogate escape")
    if not isinstance(obj, dict):
        return Checked(reason="invalid_event", detail="not an object")

    event_id = _required_str(obj, "event_id", 128)
    if event_id is None:
        return Checked(reason="invalid_event", detail="event_id")
    etype = obj.get("type")
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        return Checked(reason="invalid_event", detail="type")
    user_id = _required_str(obj, "user_id", 256)
    if user_id is None:
        return Checked(reason="invalid_event", detail="user_id")

    raw_ts = obj.get("ts")
    ts_ms: int | None
    if is_json_int(raw_ts):
        ts_ms = int(raw_ts)
    elif isinstance(raw_ts, str):
        ts_ms = parse_rfc3339_ms(raw_ts)
    else:
        ts_ms = None
    if ts_ms is None:
        return Checked(reason="invalid_event", detail="ts")

    props = obj.get("props")
    if props is not None and (
        not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values())
    ):
        return Checked(reason="invalid_event", detail="props")

    campaign: str | None = None
    survey: str | None = None
    score: int | None = None
    if etype in ("visit", "conversion"):
        campaign = _required_str(obj, "campaign")
        if campaign is None:
            return Checked(reason="invalid_event", detail="campaign")
    if etype == "survey":
        survey = obj.get("survey")
        raw_score = obj.get("score")
        if survey not in ("nps", "csat"):
            return Checked(reason="invalid_event", detail="survey")
        if not is_json_int(raw_score):
            return Checked(reason="invalid_event", detail="score type")
        low, high = (0, 10) if survey == "nps" else (1, 5)
        if not low <= raw_score <= high:
            return Checked(reason="invalid_event", detail="score range")
        score = int(raw_score)

    now_ms = to_ms(now)
    if ts_ms < now_ms - max_lateness_days * DAY_MS:
        return Checked(reason="late", detail="too old")
    if ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        return Checked(reason="future", detail="too far ahead")
    kept = tuple(sorted(props.items())) if props else ()
    return Checked(event=Event(event_id, etype, user_id, ts_ms, campaign, survey, score, kept))


#: The contract's default of STREAM_CAMPAIGN_MAX_SERIES.
CAMPAIGN_MAX_SERIES = 500


def capped_conversion_ratio(visits: Counter[str], conversions: Counter[str],
                            max_series: int) -> dict[str, float]:
    """Conversion ratio by campaign with the contract's campaign cardinality, by brute
    force: every campaign with a visit is ranked by visits (more first), then by name; the
    first ``max_series`` of them have their own ratio, except a name longer than 128
    characters and a campaign really named ``other`` (the README: it joins the bucket of
    its name); every other campaign's conversions and visits are summed into ``other``,
    which, like any ratio, is left out without visits."""
    ranked = sorted((c for c, n in visits.items() if n > 0 and len(c) <= 128 and c != "other"),
                    key=lambda c: (-visits[c], c))
    own = set(ranked[:max_series])
    out = {c: conversions[c] / visits[c] for c in own}
    rest_visits = sum(n for c, n in visits.items() if c not in own)
    rest_conversions = sum(n for c, n in conversions.items() if c not in own)
    if rest_visits:
        out["other"] = rest_conversions / rest_visits
    return dict(sorted(out.items()))


def run(
    values: Sequence[bytes | None],
    now: datetime,
    timezone: str = "UTC",
    max_lateness_days: int = 400,
    campaign_max_series: int = CAMPAIGN_MAX_SERIES,
    forgotten: Mapping[str, int] | None = None,
) -> OracleRun:
    """Validate, de-duplicate and compute every figure from messages in delivery order.

    ``forgotten`` maps users erased with ``forget`` (contract section 7) to how many of
    ``values`` came before the erasure: their ``activity``, ``signup`` and
    ``cancellation`` events among those are left out of ``folded`` (after
    de-duplication: a later repeat of such an event id is still a repeat), while
    ``accepted`` (the totals) keeps them. ``users_forgotten_total`` counts those of them
    with such an event the store still held: a signup or cancellation, or an activity of
    the last 90 days (the per-user activity bitmaps kept by default)."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    tz = ZoneInfo(timezone)
    dead: Counter[str] = Counter()
    accepted: list[Event] = []
    folded: list[Event] = []
    seen_ids: set[str] = set()
    gone = forgotten or {}
    erased: set[str] = set()
    for index, value in enumerate(values):
        checked = check(value, now, max_lateness_days)
        if checked.event is None:
            assert checked.reason is not None
            dead[checked.reason] += 1
            continue
        ev = checked.event
        accepted.append(ev)
        if ev.type != "activity":
            if ev.event_id in seen_ids:
                continue  # the first one folded wins
            seen_ids.add(ev.event_id)
        if index < gone.get(ev.user_id, -1) and ev.type in ("activity", "signup",
                                                            "cancellation"):
            if ev.type != "activity" or (
                    _local_day(now, tz) - _local_day(from_ms(ev.ts_ms), tz)).days < 90:
                erased.add(ev.user_id)
            continue
        folded.append(ev)

    figures = _figures(folded, accepted, dead, now, tz, campaign_max_series)
    # users with something erased (the store holds nothing about the others)
    figures["users_forgotten_total"] = len(erased)
    return OracleRun(figures=figures, accepted=accepted, folded=folded, dead_letters=dead)


def _local_day(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def compute_figures(
    values: Sequence[bytes | None],
    now: datetime,
    timezone: str = "UTC",
    max_lateness_days: int = 400,
    campaign_max_series: int = CAMPAIGN_MAX_SERIES,
    forgotten: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The figures of contract section 3 shaped like ``report --json``."""
    return run(values, now, timezone, max_lateness_days, campaign_max_series,
               forgotten).figures


#: Figures that have a value for a past day (``previous_day_<name>`` is ``<name>`` as of
#: the end of yesterday); ``events_total`` and ``dead_letter_total`` are all-time totals.
PREVIOUS_DAY_FIGURES = (
    "daily_active_users", "weekly_active_users", "monthly_active_users",
    "calendar_month_active_users", "customers", "churn_ratio", "retention_ratio",
    "conversion_ratio", "nps_score", "csat_ratio", "first_week_active_ratio",
)


#: Figures that are HyperLogLog estimates (the contract: "unique counts are HyperLogLog
#: estimates, every other figure is exact"): the active-user counts of today's windows
#: and the stickiness ratios built from them. Written out here from the contract, not
#: taken from the code under test, so a figure the code wrongly estimates is caught.
UNIQUE = frozenset({
    "daily_active_users", "weekly_active_users", "monthly_active_users",
    "calendar_month_active_users", "stickiness_ratio", "previous_day_stickiness_ratio",
})

#: :data:`UNIQUE` with the active-user counts as of the end of yesterday, for tests that
#: compare the ``previous_day_*`` family too.
UNIQUE_WITH_PREVIOUS_DAY = UNIQUE | frozenset({
    "previous_day_daily_active_users", "previous_day_weekly_active_users",
    "previous_day_monthly_active_users", "previous_day_calendar_month_active_users",
})

#: The segment figures that are HyperLogLog estimates (``STREAM_SEGMENTS``).
SEGMENT_UNIQUE = frozenset({
    "segment_daily_active_users", "segment_weekly_active_users",
    "segment_monthly_active_users", "segment_stickiness_ratio",
})


def figures_as_of(
    values: Sequence[bytes | None],
    now: datetime,
    day: date,
    timezone: str = "UTC",
    max_lateness_days: int = 400,
    campaign_max_series: int = CAMPAIGN_MAX_SERIES,
    forgotten: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The figures as of the end of local ``day`` (today or earlier), for messages
    accepted by a processor whose clock is ``now``: only events dated on or before
    ``day`` count, "today" is ``day``. The all-time counters are left out."""
    tz = ZoneInfo(timezone)
    oracle_run = run(values, now, timezone, max_lateness_days, campaign_max_series,
                     forgotten)
    next_midnight = to_ms(datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz))
    folded = [e for e in oracle_run.folded if e.ts_ms < next_midnight]
    out = _figures(folded, [], Counter(), from_ms(next_midnight - 1), tz, campaign_max_series)
    del out["events_total"], out["dead_letter_total"], out["late_events_total"]
    del out["ignored_total"]
    return out


def previous_day_figures(
    values: Sequence[bytes | None],
    now: datetime,
    timezone: str = "UTC",
    max_lateness_days: int = 400,
    campaign_max_series: int = CAMPAIGN_MAX_SERIES,
    forgotten: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``previous_day_*`` family: every figure of :data:`PREVIOUS_DAY_FIGURES` as of
    the end of yesterday (``previous_day_stickiness_ratio`` is in :func:`compute_figures`)."""
    yesterday = now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)
    before = figures_as_of(values, now, yesterday, timezone, max_lateness_days,
                           campaign_max_series, forgotten)
    return {f"previous_day_{n}": before[n] for n in PREVIOUS_DAY_FIGURES if n in before}


def dead_letter_counts(
    values: Sequence[bytes | None], now: datetime, max_lateness_days: int = 400
) -> Counter[str]:
    """How many messages are dead-lettered, by reason."""
    out: Counter[str] = Counter()
    for value in values:
        reason = check(value, now, max_lateness_days).reason
        if reason is not None:
            out[reason] += 1
    return out


def _figures(
    folded: list[Event],
    accepted: list[Event],
    dead: Counter[str],
    now: datetime,
    tz: ZoneInfo,
    campaign_max_series: int = 500,
) -> dict[str, Any]:
    today = now.astimezone(tz).date()
    day_cache: dict[int, date] = {}

    def day_of(ev: Event) -> date:
        """Calendar day of the event's time in the configured zone."""
        if ev.ts_ms not in day_cache:
            day_cache[ev.ts_ms] = from_ms(ev.ts_ms).astimezone(tz).date()
        return day_cache[ev.ts_ms]

    def days_back(first: int, last: int) -> set[date]:
        """Days from ``today - first`` to ``today - last`` (first >= last)."""
        return {today - timedelta(days=k) for k in range(last, first + 1)}

    def active_users(days: set[date]) -> set[str]:
        return {e.user_id for e in folded if e.type == "activity" and day_of(e) in days}

    out: dict[str, Any] = {}

    # Active users and stickiness.
    dau = active_users({today})
    wau = active_users(days_back(6, 0))
    mau = active_users(days_back(29, 0))
    month_days = {today.replace(day=d) for d in range(1, today.day + 1)}
    out["daily_active_users"] = len(dau)
    out["weekly_active_users"] = len(wau)
    out["monthly_active_users"] = len(mau)
    out["calendar_month_active_users"] = len(active_users(month_days))
    if mau:
        out["stickiness_ratio"] = len(dau) / len(mau)
    yesterday_users = active_users(days_back(1, 1))
    month_to_yesterday = active_users(days_back(30, 1))
    if month_to_yesterday:
        out["previous_day_stickiness_ratio"] = len(yesterday_users) / len(month_to_yesterday)

    # Customers: latest signup/cancellation by event time; cancellation wins ties.
    status_events = [e for e in folded if e.type in ("signup", "cancellation")]

    def latest_is_signup(events: list[Event]) -> bool:
        latest = max(events, key=lambda e: (e.ts_ms, e.type == "cancellation"))
        return latest.type == "signup"

    by_user: dict[str, list[Event]] = {}
    for e in status_events:
        by_user.setdefault(e.user_id, []).append(e)
    out["customers"] = sum(1 for evs in by_user.values() if latest_is_signup(evs))

    # Churn over the rolling 30 days, starting at 00:00 of the day 29 days before today.
    window_first_day = today - timedelta(days=29)
    start_ms = to_ms(datetime.combine(window_first_day, time(0), tzinfo=tz))
    customers_at_start = 0
    churned = 0
    for evs in by_user.values():
        before = [e for e in evs if e.ts_ms < start_ms]
        if not before or not latest_is_signup(before):
            continue
        customers_at_start += 1
        if any(
            e.type == "cancellation" and e.ts_ms >= start_ms and day_of(e) <= today for e in evs
        ):
            churned += 1
    if customers_at_start:
        out["churn_ratio"] = churned / customers_at_start
        out["retention_ratio"] = 1 - churned / customers_at_start

    # Conversion per campaign over the rolling 30 days (plain event counts).
    window30 = days_back(29, 0)
    visits: Counter[str] = Counter()
    conversions: Counter[str] = Counter()
    for e in folded:
        if e.campaign is not None and day_of(e) in window30:
            if e.type == "visit":
                visits[e.campaign] += 1
            elif e.type == "conversion":
                conversions[e.campaign] += 1
    out["conversion_ratio"] = capped_conversion_ratio(visits, conversions, campaign_max_series)

    # NPS and CSAT: every answer over the rolling 30 days.
    nps = [e.score for e in folded if e.survey == "nps" and day_of(e) in window30]
    csat = [e.score for e in folded if e.survey == "csat" and day_of(e) in window30]
    if nps:
        promoters = sum(1 for s in nps if s is not None and s >= 9)
        detractors = sum(1 for s in nps if s is not None and s <= 6)
        out["nps_score"] = 100 * (promoters - detractors) / len(nps)
    if csat:
        out["csat_ratio"] = sum(1 for s in csat if s is not None and s >= 4) / len(csat)

    # First week: earliest signup day s in [today-37, today-8]; activity on s+1..s+7.
    cohort_days = days_back(37, 8)
    first_signup: dict[str, date] = {}
    for e in folded:
        if e.type == "signup" and day_of(e) in cohort_days:
            d = day_of(e)
            if e.user_id not in first_signup or d < first_signup[e.user_id]:
                first_signup[e.user_id] = d
    if first_signup:
        activity_days: dict[str, set[date]] = {}
        for e in folded:
            if e.type == "activity":
                activity_days.setdefault(e.user_id, set()).add(day_of(e))
        participated = 0
        for user, s in first_signup.items():
            week = {s + timedelta(days=k) for k in range(1, 8)}
            if week & activity_days.get(user, set()):
                participated += 1
        out["first_week_active_ratio"] = participated / len(first_signup)

    # Counters: every valid event (repeats included) and every dead letter.
    counted = Counter(e.type for e in accepted)
    out["events_total"] = {t: counted[t] for t in EVENT_TYPES}
    out["dead_letter_total"] = {r: dead[r] for r in REASONS}
    out.update(_cohorts(folded, today, day_of))
    out["late_events_total"] = _late(accepted, today, day_of)
    # native messages are never ignored; tests of mapped formats count their own
    out["ignored_total"] = {"unmapped": 0}
    return out


# -- signup cohorts and late events (contract section 6) ----------------------------------

COHORT_DAYS = (1, 7, 14, 30)
LATE_AGES = ("1d", "2-7d", "8-30d", "31d+")
PREVIOUS_DAY_FIGURES += ("cohort_retention_ratio", "cohort_users")


def cohort_members(folded: Sequence[Event], today: date, n: int,
                   day_of: Any) -> dict[str, date]:
    """The day-``n`` signup cohort as of ``today``: user -> their earliest signup day s
    among the 7 days from yesterday-n-6 to yesterday-n."""
    last = today - timedelta(days=1 + n)
    first = last - timedelta(days=6)
    out: dict[str, date] = {}
    for e in folded:
        if (e.type == "signup" and first <= day_of(e) <= last
                and (e.user_id not in out or day_of(e) < out[e.user_id])):
            out[e.user_id] = day_of(e)
    return out


def _cohorts(folded: Sequence[Event], today: date, day_of: Any) -> dict[str, Any]:
    """``cohort_users`` and ``cohort_retention_ratio`` keyed by N (a cohort of no user is
    not exported): the share of the cohort with an activity on day s+N exactly."""
    active = {(e.user_id, day_of(e)) for e in folded if e.type == "activity"}
    users: dict[str, int] = {}
    ratio: dict[str, float] = {}
    for n in COHORT_DAYS:
        members = cohort_members(folded, today, n, day_of)
        if members:
            kept = sum(1 for u, s in members.items() if (u, s + timedelta(days=n)) in active)
            users[str(n)] = len(members)
            ratio[str(n)] = kept / len(members)
    return {"cohort_retention_ratio": ratio, "cohort_users": users}


def _late(accepted: Sequence[Event], today: date, day_of: Any) -> dict[str, int]:
    """Valid events (repeats included) dated before today, by whole days before it."""
    out = dict.fromkeys(LATE_AGES, 0)
    for e in accepted:
        age = (today - day_of(e)).days
        if age >= 1:
            out["1d" if age == 1 else "2-7d" if age <= 7 else "8-30d" if age <= 30
                else "31d+"] += 1
    return out


# -- segments (STREAM_SEGMENTS) ----------------------------------------------------------

SEGMENT_NAMES = ("daily_active_users", "weekly_active_users", "monthly_active_users",
                 "stickiness_ratio", "customers", "churn_ratio", "retention_ratio",
                 "conversion_ratio", "nps_score", "csat_ratio")


def segment_registry(accepted: Sequence[Event], dims: Sequence[str],
                     max_values: int) -> dict[str, list[str]]:
    """The values each dimension registers: the first ``max_values`` distinct ones among
    the accepted events in the order they were folded (repeats included; cancellations
    carry no segment), skipping missing, empty, over-long (> 64) and reserved values."""
    reg: dict[str, list[str]] = {d: [] for d in dims}
    for e in accepted:
        if e.type == "cancellation":
            continue
        props = dict(e.props)
        for d in dims:
            raw = props.get(d)
            if not raw or len(raw) > 64 or raw in ("none", "other"):
                continue
            if raw not in reg[d] and len(reg[d]) < max_values:
                reg[d].append(raw)
    return reg


def segment_figures(
    values: Sequence[bytes | None],
    now: datetime,
    dims: Sequence[str],
    max_values: int = 20,
    timezone: str = "UTC",
    forgotten: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``segment_*`` figures (dimension -> value -> figure) from messages in the order
    they were first folded, straight from the README's definitions."""
    tz = ZoneInfo(timezone)
    oracle_run = run(values, now, timezone, forgotten=forgotten)
    reg = segment_registry(oracle_run.accepted, dims, max_values)
    folded = oracle_run.folded
    today = now.astimezone(tz).date()

    def day_of(e: Event) -> date:
        return from_ms(e.ts_ms).astimezone(tz).date()

    def seg(e: Event, d: str) -> str:
        raw = dict(e.props).get(d)
        if not raw:
            return "none"
        if raw in ("none", "other") or raw in reg[d]:
            return raw
        return "other"

    window30 = {today - timedelta(days=k) for k in range(30)}
    window7 = {today - timedelta(days=k) for k in range(7)}
    start_ms = to_ms(datetime.combine(today - timedelta(days=29), time(0), tzinfo=tz))
    end_ms = to_ms(datetime.combine(today + timedelta(days=1), time(0), tzinfo=tz))
    by_user: dict[str, list[Event]] = {}
    for e in folded:
        if e.type in ("signup", "cancellation"):
            by_user.setdefault(e.user_id, []).append(e)

    out: dict[str, Any] = {"segment_" + n: {} for n in SEGMENT_NAMES}
    for d in dims:
        names = sorted(set(reg[d]) | {"none", "other"})
        rows: dict[str, dict[str, Any]] = {v: {} for v in names}

        def users(days: set[date], v: str, d: str = d) -> set[str]:
            return {e.user_id for e in folded
                    if e.type == "activity" and day_of(e) in days and seg(e, d) == v}

        def customer_segment(evs: list[Event], before_ms: int, d: str = d) -> str | None:
            """The segment of a customer at ``before_ms`` (None: not a customer then):
            that of the latest signup before it, by time, the greater value on a tie."""
            prior = [e for e in evs if e.ts_ms < before_ms]
            if not prior:
                return None
            latest = max(prior, key=lambda e: (e.ts_ms, e.type == "cancellation"))
            if latest.type != "signup":
                return None
            signups = [e for e in prior if e.type == "signup"]
            return max((e.ts_ms, seg(e, d)) for e in signups)[1]

        for v in names:
            row = rows[v]
            dau, wau, mau = users({today}, v), users(window7, v), users(window30, v)
            row["daily_active_users"] = len(dau)
            row["weekly_active_users"] = len(wau)
            row["monthly_active_users"] = len(mau)
            if mau:
                row["stickiness_ratio"] = len(dau) / len(mau)
            row["customers"] = sum(1 for evs in by_user.values()
                                   if customer_segment(evs, end_ms) == v)
            at_start = [evs for evs in by_user.values() if customer_segment(evs, start_ms) == v]
            if at_start:
                churned = sum(1 for evs in at_start if any(
                    e.type == "cancellation" and start_ms <= e.ts_ms < end_ms for e in evs))
                row["churn_ratio"] = churned / len(at_start)
                row["retention_ratio"] = 1 - churned / len(at_start)
            mine = [e for e in folded if e.type in ("visit", "conversion", "survey")
                    and day_of(e) in window30 and seg(e, d) == v]
            visits = sum(1 for e in mine if e.type == "visit")
            if visits:
                row["conversion_ratio"] = sum(1 for e in mine if e.type == "conversion") / visits
            nps = [e.score for e in mine if e.survey == "nps"]
            csat = [e.score for e in mine if e.survey == "csat"]
            if nps:
                row["nps_score"] = 100 * (sum(1 for x in nps if x >= 9)
                                          - sum(1 for x in nps if x <= 6)) / len(nps)
            if csat:
                row["csat_ratio"] = sum(1 for x in csat if x >= 4) / len(csat)
        for name in SEGMENT_NAMES:
            out["segment_" + name][d] = {v: rows[v][name] for v in names if name in rows[v]}
    out.update(segment_cohorts(folded, today, dims, seg, day_of))
    return out


def segment_cohorts(folded: Sequence[Event], today: date, dims: Sequence[str],
                    seg: Any, day_of: Any) -> dict[str, Any]:
    """``segment_cohort_users`` and ``segment_cohort_retention_ratio`` (dimension -> value
    -> N -> figure): a cohort member counts in the segment of the signup that put them in
    the cohort, their first signup (by time) of their cohort day s; on equal times the
    greater value."""
    active = {(e.user_id, day_of(e)) for e in folded if e.type == "activity"}
    users: dict[str, dict[str, dict[str, int]]] = {d: {} for d in dims}
    ratio: dict[str, dict[str, dict[str, float]]] = {d: {} for d in dims}
    for n in COHORT_DAYS:
        members = cohort_members(folded, today, n, day_of)
        for d in dims:
            counts: Counter[str] = Counter()
            kept: Counter[str] = Counter()
            for u, s in members.items():
                that_day = [e for e in folded
                            if e.type == "signup" and e.user_id == u and day_of(e) == s]
                v = max(that_day, key=lambda e: (-e.ts_ms, seg(e, d)))
                value = seg(v, d)
                counts[value] += 1
                kept[value] += (u, s + timedelta(days=n)) in active
            for value, c in counts.items():
                users[d].setdefault(value, {})[str(n)] = c
                ratio[d].setdefault(value, {})[str(n)] = kept[value] / c
    return {"segment_cohort_retention_ratio": ratio, "segment_cohort_users": users}


# -- days-active distribution and lifecycle ------------------------------------------------

#: Days before a day that tell a resurrecting user from a new one.
LIFECYCLE_HORIZON = 45


def activity_figures(values: Sequence[bytes | None], now: datetime,
                     timezone: str = "UTC",
                     forgotten: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``days_active_users``, ``lifecycle_users`` and their ``previous_day_*`` from the
    users' sets of active days, straight from the README's definitions."""
    tz = ZoneInfo(timezone)
    today = now.astimezone(tz).date()
    active: dict[str, set[date]] = {}
    for e in run(values, now, timezone, forgotten=forgotten).folded:
        if e.type == "activity":
            active.setdefault(e.user_id, set()).add(from_ms(e.ts_ms).astimezone(tz).date())
    out: dict[str, Any] = {}
    for back, prefix in ((0, ""), (1, "previous_day_")):
        t = today - timedelta(days=back)

        def span(first: int, last: int, t: date = t) -> set[date]:
            """Days t - first .. t - last."""
            return {t - timedelta(days=k) for k in range(last, first + 1)}

        dist: dict[str, dict[str, int]] = {}
        for n in (7, 30):
            counts = Counter(len(days & span(n - 1, 0)) for days in active.values())
            dist[f"{n}d"] = {str(k): counts[k] for k in range(1, n + 1)}
        states = dict.fromkeys(("new", "returning", "resurrecting", "dormant"), 0)
        for days in active.values():
            if t in days:
                if days & span(30, 1):
                    states["returning"] += 1
                elif days & span(LIFECYCLE_HORIZON, 31):
                    states["resurrecting"] += 1
                else:
                    states["new"] += 1
            elif t - timedelta(days=30) in days and not days & span(29, 0):
                states["dormant"] += 1
        out[prefix + "days_active_users"] = dist
        out[prefix + "lifecycle_users"] = states
    return out

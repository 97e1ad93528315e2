"""Seeded synthetic telemetry of a subscription product.

The model is pure: no I/O, no wall clock, no global random state. Given the same
``users``, ``seed`` and ``now`` it yields exactly the same events, which makes it usable
both as the ``demo`` command's data source and as a reproducible load generator.

What is modelled, and why the numbers are what they are:

* ``users`` people (default 5000), each with a usage habit (heavy, regular, occasional,
  dormant), a plan, a platform and a country. About 11 % of them joined in the last 40
  days (8 % growth per 30 days) so that the first-week figure has a real cohort; the rest
  joined up to a year ago.
* Customers cancel at roughly 3-4 % per month (heavier users less often), and about a
  third of those who cancel sign up again after a few weeks.
* New customers are keen in their first week: ~58 % of them are onboarded and use the
  product most days, the rest hardly come back, which puts first-week participation
  at roughly 60-68 %.
* Seven marketing campaigns get landing-page visits (0.1 per user and day) and convert
  at 1.2 % to 9.5 %, differently per campaign.
* Active users sometimes answer NPS (heavy users are more often promoters; overall NPS
  lands around +30) and CSAT (about 80 % answer 4 or 5).
* A habit is a rhythm, not a daily coin toss: a user with a 38 % habit comes back every
  two or three days, and each habit's rhythms are spread evenly over its users, so the
  daily active users barely move from one day to the next; weekends bring fewer
  sessions and visits, not fewer active users.

History and live stream are one draw: :meth:`EventModel.plan_day` splits a day at
``now`` into the history so far and the rest of the day, which :class:`CompressedDay`
plays at any speed, stamped with the wall clock (the ``demo`` and ``generate`` commands);
the users active today are then exactly those whose habits make them active today.

Events are plain dicts in the wire format of the contract (section 1). ``ts`` comes in
the shapes real clients send: browsers send RFC 3339 UTC with milliseconds, mobile apps
epoch milliseconds, desktop apps local time with a UTC offset, and the backend (signup,
cancellation, conversion) RFC 3339 UTC with whole seconds.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

Event = dict[str, Any]
"""One event as a JSON-ready dict (contract section 1)."""

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000

ACTIVITY_TOPIC: Final = "engagement.activity"
CONVERSIONS_TOPIC: Final = "engagement.conversions"
CANCELLATIONS_TOPIC: Final = "engagement.cancellations"
SURVEYS_TOPIC: Final = "engagement.surveys"
TOPICS: Final[tuple[str, ...]] = (
    ACTIVITY_TOPIC,
    CONVERSIONS_TOPIC,
    CANCELLATIONS_TOPIC,
    SURVEYS_TOPIC,
)
EVENT_TYPES: Final[tuple[str, ...]] = (
    "activity",
    "signup",
    "visit",
    "conversion",
    "cancellation",
    "survey",
)

_ROUTES: Final[dict[str, str]] = {
    "activity": ACTIVITY_TOPIC,
    "signup": ACTIVITY_TOPIC,
    "visit": CONVERSIONS_TOPIC,
    "conversion": CONVERSIONS_TOPIC,
    "cancellation": CANCELLATIONS_TOPIC,
    "survey": SURVEYS_TOPIC,
}


def topic_for(event_type: str) -> str:
    """Return the Kafka topic an event of ``event_type`` is produced to.

    The processor decides meaning by ``type``, not topic; the split only mirrors how
    real systems publish (product telemetry, marketing, billing, surveys).

    Raises:
        ValueError: for a type outside the contract's six.
    """
    try:
        return _ROUTES[event_type]
    except KeyError:
        raise ValueError(f"unknown event type {event_type!r}") from None


# --------------------------------------------------------------------------- model data


@dataclass(frozen=True, slots=True)
class Segment:
    """A usage habit shared by a group of users.

    Attributes:
        name: label of the habit.
        share: share of established users with this habit (0-1).
        p_active: probability of using the product on a given weekday (0-1).
        mean_events: mean ``activity`` events on a day the user is active (>= 1).
        churn_factor: multiplier on the base cancellation hazard.
        promoter: probability that an NPS answer is 9-10.
        detractor: probability that an NPS answer is 0-6.
    """

    name: str
    share: float
    p_active: float
    mean_events: float
    churn_factor: float
    promoter: float
    detractor: float


SEGMENTS: Final[tuple[Segment, ...]] = (
    Segment("heavy", 0.15, 0.85, 3.2, 0.4, 0.55, 0.14),
    Segment("regular", 0.35, 0.38, 1.6, 0.8, 0.46, 0.22),
    Segment("occasional", 0.30, 0.09, 1.2, 1.4, 0.35, 0.32),
    Segment("dormant", 0.20, 0.012, 1.0, 2.2, 0.28, 0.42),
)
_DORMANT: Final = SEGMENTS[3]


@dataclass(frozen=True, slots=True)
class Campaign:
    """A marketing campaign.

    Attributes:
        name: the ``campaign`` field value.
        visit_share: share of all landing-page visits (0-1).
        conversion_rate: probability that a visit converts (0-1).
    """

    name: str
    visit_share: float
    conversion_rate: float


CAMPAIGNS: Final[tuple[Campaign, ...]] = (
    Campaign("spring-sale", 0.22, 0.045),
    Campaign("newsletter", 0.20, 0.030),
    Campaign("retargeting", 0.17, 0.020),
    Campaign("black-friday", 0.15, 0.065),
    Campaign("partner-blog", 0.10, 0.012),
    Campaign("webinar", 0.09, 0.075),
    Campaign("referral", 0.07, 0.095),
)

_PLANS: Final = (("basic", 0.50), ("pro", 0.32), ("team", 0.14), ("enterprise", 0.04))
_PLATFORMS: Final = (("web", 0.50), ("ios", 0.20), ("android", 0.20), ("desktop", 0.10))
# (country, standard UTC offset in minutes, weight). Fixed offsets: DST does not matter
# for a demo, and a half-hour offset (India) keeps timestamp parsers honest.
_COUNTRIES: Final = (
    ("US", -300, 0.32),
    ("GB", 0, 0.10),
    ("DE", 60, 0.12),
    ("FR", 60, 0.07),
    ("NL", 60, 0.04),
    ("ES", 60, 0.04),
    ("IN", 330, 0.09),
    ("BR", -180, 0.07),
    ("JP", 540, 0.06),
    ("CA", -300, 0.06),
    ("AU", 600, 0.03),
)
_FEATURES: Final = (
    ("dashboard", 0.30),
    ("editor", 0.25),
    ("reports", 0.15),
    ("search", 0.12),
    ("settings", 0.06),
    ("export", 0.07),
    ("integrations", 0.05),
)
_CANCEL_REASONS: Final = (
    ("too_expensive", 0.34),
    ("not_using", 0.30),
    ("switched", 0.16),
    ("missing_feature", 0.12),
    ("other", 0.08),
)
# Share of use by local hour of day (0-23): quiet nights, a working-day plateau and an
# evening bump, as in most SaaS dashboards.
_HOUR_WEIGHTS: Final = (
    0.4, 0.25, 0.15, 0.1, 0.1, 0.2, 0.6, 1.4, 2.6, 3.4, 3.6, 3.5,
    3.0, 3.4, 3.5, 3.3, 3.0, 2.6, 2.2, 2.1, 2.0, 1.7, 1.2, 0.7,
)  # fmt: skip
_NPS_DETRACTOR_WEIGHTS: Final = (0.03, 0.02, 0.04, 0.06, 0.10, 0.30, 0.45)  # scores 0-6
_CSAT_WEIGHTS: Final = (0.04, 0.05, 0.11, 0.36, 0.44)  # scores 1-5: 80 % are 4-5

ESTABLISHED_MAX_AGE_DAYS: Final = 360
"""Oldest signup, in days before ``now``; below the processor's default lateness (400)."""
NEW_USER_SPAN_DAYS: Final = 40
"""New users joined within this many days before ``now``."""
MONTHLY_GROWTH: Final = 0.08
"""First-time signups per 30 days, as a share of the population."""
MONTHLY_CHURN: Final = 0.03
"""Base share of customers cancelling per 30 days, before the segment's factor."""
RESUBSCRIBE_PROB: Final = 0.3
"""Probability that a user who cancelled signs up again."""
RESUBSCRIBE_MEAN_DAYS: Final = 45.0
"""Mean days between a cancellation and the re-signup that follows it."""
ONBOARDED_SHARE: Final = 0.58
"""Share of new users who keep using the product after signing up."""
FIRST_WEEK_P: Final = 0.45
"""Minimum daily activity probability of an onboarded user in days 1-7 after signup."""
RETURN_WEEK_P: Final = 0.35
"""Minimum daily activity probability in days 1-7 after a re-signup."""
LAPSED_FACTOR: Final = 0.15
"""Activity of a user who cancelled, relative to their habit (free tier, curiosity)."""
WEEKEND_FACTOR: Final = 0.8
"""Sessions per active user and visits on Saturdays and Sundays, relative to weekdays.

Only the amount of use drops at weekends, not who is active: a weekly dip in active
users would make a Monday's whole-day active users 1.25 times Sunday's, and a live demo
(whose today is compared with yesterday) must keep today within 1.1 times yesterday."""
VISITS_PER_USER_DAY: Final = 0.1
"""Landing-page visits per day, per user of the population."""
KNOWN_VISITOR_SHARE: Final = 0.25
"""Share of visits made by existing users rather than anonymous prospects."""
NPS_PER_ACTIVE_DAY: Final = 0.018
"""Probability that a user answers the NPS question on a day they are active."""
CSAT_PER_ACTIVE_DAY: Final = 0.03
"""Probability that a user answers the CSAT question on a day they are active."""

_BASE_DAILY_HAZARD: Final = -math.log(1.0 - MONTHLY_CHURN) / 30.0
_SESSION_GAP_MS: Final = 4 * MINUTE_MS  # mean gap between events of one session
_CONVERSION_DELAY_MS: Final = 8 * MINUTE_MS  # mean time from visit to conversion
# Events of local day d fall in UTC no earlier than this before d's UTC midnight, since
# the easternmost country is UTC+10; the history merges days with this margin.
_MAX_EAST_MS: Final = max(off for _, off, _ in _COUNTRIES) * MINUTE_MS

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _cum(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


_PLAN_CUM: Final = _cum([w for _, w in _PLANS])
_PLATFORM_CUM: Final = _cum([w for _, w in _PLATFORMS])
_COUNTRY_CUM: Final = _cum([w for _, _, w in _COUNTRIES])
_FEATURE_CUM: Final = _cum([w for _, w in _FEATURES])
_REASON_CUM: Final = _cum([w for _, w in _CANCEL_REASONS])
_HOUR_CUM: Final = _cum(_HOUR_WEIGHTS)
_SEGMENT_CUM: Final = _cum([s.share for s in SEGMENTS])
# Onboarded newcomers are never dormant, so they draw from the other habits only.
_ACTIVE_SEGMENT_CUM: Final = _cum([s.share for s in SEGMENTS[:3]])
_CAMPAIGN_CUM: Final = _cum([c.visit_share for c in CAMPAIGNS])
_DETRACTOR_CUM: Final = _cum(_NPS_DETRACTOR_WEIGHTS)
_CSAT_CUM: Final = _cum(_CSAT_WEIGHTS)


def _pick(rng: random.Random, cum: Sequence[float]) -> int:
    """Index drawn with the weights whose running sums are ``cum``."""
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def to_epoch_ms(moment: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime.

    Raises:
        ValueError: if ``moment`` is naive, since the model cannot guess its zone.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _fmt_z(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def _fmt_z_millis(ms: int) -> str:
    secs, rest = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rest:03d}Z"


def _fmt_local(ms: int, offset_min: int) -> str:
    sign = "+" if offset_min >= 0 else "-"
    hours, minutes = divmod(abs(offset_min), 60)
    local = time.gmtime(ms // 1000 + offset_min * 60)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{sign}{hours:02d}:{minutes:02d}"


# How each kind of sender writes ``ts``.
_TS_SERVER: Final = 0  # RFC 3339 UTC, whole seconds
_TS_BROWSER: Final = 1  # RFC 3339 UTC with milliseconds (JavaScript toISOString)
_TS_MOBILE: Final = 2  # epoch milliseconds (int)
_TS_DESKTOP: Final = 3  # RFC 3339 local time with the UTC offset
_PLATFORM_TS: Final = {
    "web": _TS_BROWSER,
    "ios": _TS_MOBILE,
    "android": _TS_MOBILE,
    "desktop": _TS_DESKTOP,
}


@dataclass(slots=True)
class _User:
    index: int
    user_id: str
    segment: Segment
    plan: str
    platform: str
    country: str
    offset_min: int
    ts_style: int
    age_ms: int  # how long before the anchor the user first signed up
    onboarded: bool
    # Where the user's rhythm of active days starts (0-1), see _active_on.
    phase: float = 0.0

    @property
    def expected_events(self) -> float:
        """Expected ``activity`` events per day from habit alone."""
        return self.segment.p_active * self.segment.mean_events


_Lifecycle = tuple[list[int], list[bool]]  # (times relative to the anchor in ms, is_signup)


def _new_user(rng: random.Random, index: int, age_ms: int, newcomer: bool) -> _User:
    onboarded = True
    if newcomer:
        onboarded = rng.random() < ONBOARDED_SHARE
        segment = SEGMENTS[_pick(rng, _ACTIVE_SEGMENT_CUM)] if onboarded else _DORMANT
    else:
        segment = SEGMENTS[_pick(rng, _SEGMENT_CUM)]
    platform = _PLATFORMS[_pick(rng, _PLATFORM_CUM)][0]
    country, offset_min, _ = _COUNTRIES[_pick(rng, _COUNTRY_CUM)]
    return _User(
        index=index,
        user_id=f"u{index:06d}",
        segment=segment,
        plan=_PLANS[_pick(rng, _PLAN_CUM)][0],
        platform=platform,
        country=country,
        offset_min=offset_min,
        ts_style=_PLATFORM_TS[platform],
        age_ms=age_ms,
        onboarded=onboarded,
    )


def _nps_score(rng: random.Random, segment: Segment) -> int:
    draw = rng.random()
    if draw < segment.promoter:
        return 10 if rng.random() < 0.55 else 9
    if draw < segment.promoter + segment.detractor:
        return _pick(rng, _DETRACTOR_CUM)
    return 8 if rng.random() < 0.55 else 7


def _csat_score(rng: random.Random) -> int:
    return _pick(rng, _CSAT_CUM) + 1


_PHASE_STEP: Final = (math.sqrt(5.0) - 1.0) / 2.0
_DAY_STEP: Final = math.sqrt(2.0) - 1.0


def _active_on(user: _User, day: int, p: float) -> bool:
    """Whether ``user`` uses the product on ``day``, with probability ``p`` over days.

    A habit rather than a coin toss: the user is active on the days where
    ``(phase + day * (sqrt 2 - 1)) mod 1 < p``, a regular rhythm (a user with ``p`` 0.4
    comes back every two or three days). Since a habit's phases are spread evenly, the
    number of active users barely moves from day to day: independent coin tosses would
    swing a population of 5000's daily active users by about 2 % (one standard
    deviation) from one day to the next, enough to put today above 1.1 times yesterday
    now and then."""
    return (user.phase + day * _DAY_STEP) % 1.0 < p


def _geometric(rng: random.Random, mean: float) -> int:
    """A count >= 1 with the given mean (geometric), e.g. events in one session."""
    count = 1
    cont = 1.0 - 1.0 / mean
    while rng.random() < cont:
        count += 1
    return count


# --------------------------------------------------------------------------- the model


class EventModel:
    """A seeded population of users whose behaviour produces contract events.

    Args:
        users: size of the population at the anchor time (default 5000).
        seed: seed of every random draw (default 1); same seed, same events.
        plain_ts: if true, ``ts`` is only ever ``YYYY-MM-DDTHH:MM:SSZ`` or epoch
            milliseconds; by default browsers add milliseconds and desktop apps send
            local time with an offset, as real clients do (default False).
    """

    def __init__(self, users: int = 5000, seed: int = 1, *, plain_ts: bool = False) -> None:
        if users < 1:
            raise ValueError("users must be at least 1")
        self.seed = seed
        self.plain_ts = plain_ts
        rng = random.Random(f"{seed}:users")
        new_share = MONTHLY_GROWTH * NEW_USER_SPAN_DAYS / 30.0
        self._users: list[_User] = []
        for index in range(users):
            newcomer = rng.random() < new_share
            if newcomer:
                age = rng.random() * NEW_USER_SPAN_DAYS
            else:
                age = rng.uniform(NEW_USER_SPAN_DAYS, ESTABLISHED_MAX_AGE_DAYS)
            self._users.append(_new_user(rng, index, int(age * DAY_MS), newcomer))
        # Each habit's users get rhythms spread evenly (the k-th user of a habit starts at
        # k * golden ratio, mod 1), so on any day about the same share of them is active.
        ranks: dict[str, int] = {}
        for user in self._users:
            rank = ranks.get(user.segment.name, 0)
            ranks[user.segment.name] = rank + 1
            user.phase = (rank * _PHASE_STEP) % 1.0
        self._cycles = self._lifecycles()

    @property
    def users(self) -> int:
        """Size of the population at the anchor time."""
        return len(self._users)

    # ----------------------------------------------------------------- shared pieces

    def _lifecycles(self) -> list[_Lifecycle]:
        """Signup/cancellation history of every user, relative to the anchor.

        Times are drawn as durations from a dedicated stream, so the state at the anchor
        is the same whichever absolute ``now`` history or live is started with.
        """
        rng = random.Random(f"{self.seed}:lifecycle")
        cycles: list[_Lifecycle] = []
        for user in self._users:
            t = float(-user.age_ms)
            times, kinds = [int(t)], [True]
            hazard = _BASE_DAILY_HAZARD * user.segment.churn_factor
            while True:
                t += rng.expovariate(hazard) * DAY_MS
                if t >= 0:
                    break
                times.append(int(t))
                kinds.append(False)
                if rng.random() >= RESUBSCRIBE_PROB:
                    break
                t += rng.expovariate(1.0 / RESUBSCRIBE_MEAN_DAYS) * DAY_MS
                if t >= 0:
                    break
                times.append(int(t))
                kinds.append(True)
            cycles.append((times, kinds))
        return cycles

    def _ts(self, ms: int, style: int, offset_min: int) -> str | int:
        if style == _TS_MOBILE:
            return ms
        if self.plain_ts or style == _TS_SERVER:
            return _fmt_z(ms)
        if style == _TS_BROWSER:
            return _fmt_z_millis(ms)
        return _fmt_local(ms, offset_min)

    def _event(
        self,
        rng: random.Random,
        etype: str,
        user_id: str,
        ms: int,
        style: int,
        offset_min: int,
        extra: dict[str, Any],
    ) -> Event:
        event: Event = {
            # Seeded 128-bit ids rather than uuid4: unique in practice and reproducible.
            "event_id": f"{rng.getrandbits(128):032x}",
            "type": etype,
            "user_id": user_id,
            "ts": self._ts(ms, style, offset_min),
        }
        event.update(extra)
        return event

    def _activity(self, rng: random.Random, user: _User, ms: int) -> Event:
        props = {
            "plan": user.plan,
            "platform": user.platform,
            "country": user.country,
            "feature": _FEATURES[_pick(rng, _FEATURE_CUM)][0],
        }
        return self._event(
            rng, "activity", user.user_id, ms, user.ts_style, user.offset_min, {"props": props}
        )

    def _lifecycle_event(self, rng: random.Random, user: _User, ms: int, signup: bool) -> Event:
        if signup:
            props = {"plan": user.plan, "platform": user.platform, "country": user.country}
            return self._event(rng, "signup", user.user_id, ms, _TS_SERVER, 0, {"props": props})
        props = {"plan": user.plan, "reason": _CANCEL_REASONS[_pick(rng, _REASON_CUM)][0]}
        return self._event(rng, "cancellation", user.user_id, ms, _TS_SERVER, 0, {"props": props})

    def _survey(self, rng: random.Random, user: _User, ms: int, nps: bool) -> Event:
        if nps:
            extra: dict[str, Any] = {"survey": "nps", "score": _nps_score(rng, user.segment)}
        else:
            extra = {"survey": "csat", "score": _csat_score(rng)}
        extra["props"] = {"plan": user.plan, "platform": user.platform}
        return self._event(rng, "survey", user.user_id, ms, user.ts_style, user.offset_min, extra)

    def _visit(
        self, rng: random.Random, user: _User | None, ms: int
    ) -> tuple[Event, Campaign, str, str]:
        """A landing-page visit: the event, its campaign, the visitor id and country."""
        campaign = CAMPAIGNS[_pick(rng, _CAMPAIGN_CUM)]
        if user is not None:
            visitor, country, offset = user.user_id, user.country, user.offset_min
        else:
            # Prospects are not users yet; the site's anonymous id stands in for user_id.
            visitor = f"anon-{rng.getrandbits(48):012x}"
            country, offset, _ = _COUNTRIES[_pick(rng, _COUNTRY_CUM)]
        device = "mobile" if rng.random() < 0.45 else "desktop"
        props = {"device": device, "country": country}
        event = self._event(
            rng,
            "visit",
            visitor,
            ms,
            _TS_BROWSER,
            offset,
            {"campaign": campaign.name, "props": props},
        )
        return event, campaign, visitor, country

    def _conversion(
        self, rng: random.Random, visitor: str, campaign: str, country: str, ms: int
    ) -> Event:
        extra = {"campaign": campaign, "props": {"country": country}}
        return self._event(rng, "conversion", visitor, ms, _TS_SERVER, 0, extra)

    # --------------------------------------------------------------------- history

    def history(self, now: datetime, days: int = 40, *, baseline: bool = True) -> Iterator[Event]:
        """Yield the back history up to ``now``, in time order (to the second).

        Args:
            now: the end of the history (aware datetime); usually the wall clock.
            days: length of the history window in days (default 40). Activity, visits,
                conversions, surveys and the signups/cancellations inside the window all
                have ``ts`` in ``[now - days, now]``.
            baseline: if true (default), first yield the signups and cancellations of
                the existing customer base that happened before the window (up to 360
                days before ``now``, inside the processor's default 400-day lateness), so
                customer counts and churn are right from the start; if false, nothing
                before the window is yielded.

        Size: about ``0.67 * users * days`` events plus ~1.3 per user of baseline, i.e.
        roughly 140k events for 5000 users and 40 days.
        """
        if days < 0:
            raise ValueError("days must not be negative")
        now_ms = to_epoch_ms(now)
        for _, event in self._timeline(now_ms, now_ms - days * DAY_MS, now_ms, baseline):
            yield event

    def _timeline(
        self, anchor_ms: int, start_ms: int, end_ms: int, baseline: bool
    ) -> Iterator[tuple[int, Event]]:
        """``(ms, event)`` of every event in ``[start_ms, end_ms]`` in time order (to the
        second), the population's lifecycles anchored at ``anchor_ms`` (after the anchor
        nobody signs up or cancels); with ``baseline``, first the lifecycle events before
        ``start_ms``."""
        rng = random.Random(f"{self.seed}:history")
        users = self._users

        window_changes: dict[int, list[tuple[int, int, int]]] = {}
        old: list[tuple[int, int, bool]] = []
        for user, (times, kinds) in zip(users, self._cycles, strict=True):
            for order, (rel, signup) in enumerate(zip(times, kinds, strict=True)):
                ms = anchor_ms + rel
                if ms < start_ms:
                    old.append((ms, user.index, signup))
                else:
                    window_changes.setdefault(ms // DAY_MS, []).append((ms, user.index, order))
        if baseline:
            old.sort()
            for ms, index, signup in old:
                yield ms, self._lifecycle_event(rng, users[index], ms, signup)

        heap: list[tuple[int, int, int, Event]] = []
        counter = itertools.count()

        def push(ms: int, build: Callable[[], Event]) -> None:
            # Events outside the window are dropped before being built, to save work.
            if start_ms <= ms <= end_ms:
                # Keyed by whole seconds: most ``ts`` shapes carry no milliseconds, and
                # ordering by the truncated time keeps the output sorted as parsed.
                heapq.heappush(heap, (ms // 1000, next(counter), ms, build()))

        first_day = start_ms // DAY_MS - 1
        last_day = end_ms // DAY_MS + 1
        for day in range(first_day, last_day + 1):
            for ms, index, order in window_changes.get(day, ()):
                self._push_change(rng, push, users[index], ms, order)
            self._push_usage_day(rng, push, day, anchor_ms)
            self._push_visits_day(rng, push, day, anchor_ms, end_ms)
            # Later local days start at most _MAX_EAST_MS before their UTC midnight, so
            # everything earlier than that is final and can go out in order.
            cutoff = ((day + 1) * DAY_MS - _MAX_EAST_MS - HOUR_MS) // 1000
            while heap and heap[0][0] < cutoff:
                _, _, ms, event = heapq.heappop(heap)
                yield ms, event
        while heap:
            _, _, ms, event = heapq.heappop(heap)
            yield ms, event

    def _push_change(
        self, rng: random.Random, push: _Push, user: _User, ms: int, order: int
    ) -> None:
        signup = self._cycles[user.index][1][order]
        push(ms, partial(self._lifecycle_event, rng, user, ms, signup))
        # A fresh signup nearly always starts a first session right away; that session is
        # on the signup day itself, so it does not count for first-week participation.
        if signup and rng.random() < (0.9 if order == 0 else 0.5):
            first = ms + int(rng.expovariate(1.0 / (3 * MINUTE_MS)))
            push(first, partial(self._activity, rng, user, first))

    def _push_usage_day(self, rng: random.Random, push: _Push, day: int, now_ms: int) -> None:
        """Activity and survey answers of every user on their local calendar day ``day``."""
        # 1970-01-01 was a Thursday, so day % 7 in (2, 3) is a Saturday or Sunday.
        weekend = day % 7 in (2, 3)
        new_span_ms = NEW_USER_SPAN_DAYS * DAY_MS
        for user, (times, kinds) in zip(self._users, self._cycles, strict=True):
            offset_ms = user.offset_min * MINUTE_MS
            local_midnight = day * DAY_MS - offset_ms
            i = bisect.bisect_right(times, local_midnight + DAY_MS // 2 - now_ms) - 1
            if i < 0:
                continue  # not signed up yet
            p = user.segment.p_active
            if kinds[i]:
                since = day - (times[i] + now_ms + offset_ms) // DAY_MS
                if 1 <= since <= 7:
                    if i > 0:
                        p = max(p, RETURN_WEEK_P)
                    elif user.onboarded and user.age_ms <= new_span_ms:
                        p = max(p, FIRST_WEEK_P)
            else:
                p *= LAPSED_FACTOR
            if not _active_on(user, day, p):
                continue
            ms = local_midnight + _pick(rng, _HOUR_CUM) * HOUR_MS + int(rng.random() * HOUR_MS)
            mean_events = user.segment.mean_events
            if weekend:
                mean_events = max(1.0, mean_events * WEEKEND_FACTOR)
            for _ in range(_geometric(rng, mean_events)):
                push(ms, partial(self._activity, rng, user, ms))
                ms += int(rng.expovariate(1.0 / _SESSION_GAP_MS))
            if rng.random() < NPS_PER_ACTIVE_DAY:
                push(ms, partial(self._survey, rng, user, ms, True))
            if rng.random() < CSAT_PER_ACTIVE_DAY:
                push(ms, partial(self._survey, rng, user, ms, False))

    def _push_visits_day(
        self, rng: random.Random, push: _Push, day: int, now_ms: int, end_ms: int
    ) -> None:
        """Landing-page visits, and the conversions they lead to, of UTC day ``day``, the
        population anchored at ``now_ms``, up to ``end_ms``."""
        mean = len(self._users) * VISITS_PER_USER_DAY
        if day % 7 in (2, 3):
            mean *= WEEKEND_FACTOR
        count = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        for _ in range(count):
            ms = day * DAY_MS + _pick(rng, _HOUR_CUM) * HOUR_MS + int(rng.random() * HOUR_MS)
            user: _User | None = None
            if rng.random() < KNOWN_VISITOR_SHARE:
                candidate = self._users[int(rng.random() * len(self._users))]
                if now_ms - candidate.age_ms <= ms:  # only people who exist by then
                    user = candidate
            if ms > end_ms:
                continue  # later today: not happened yet
            visit, campaign, visitor, country = self._visit(rng, user, ms)
            push(ms, partial(_same, visit))
            if rng.random() < campaign.conversion_rate:
                conv_ms = ms + int(rng.expovariate(1.0 / _CONVERSION_DELAY_MS))
                push(
                    conv_ms,
                    partial(self._conversion, rng, visitor, campaign.name, country, conv_ms),
                )

    # ---------------------------------------------------------------- a whole day

    def plan_day(
        self,
        now: datetime,
        day_start: datetime,
        day_end: datetime,
        days: int = 40,
        *,
        baseline: bool = True,
        anchor: datetime | None = None,
    ) -> DayPlan:
        """Today as this population lives it, split at ``now``: the history up to ``now``
        and the rest of today, both from one draw, so a live stream that plays the rest
        gives today the users whose habits make them active today, and no others.

        Args:
            now: where the history ends (aware datetime); usually the wall clock.
            day_start: today's 00:00 in the processor's time zone (aware).
            day_end: tomorrow's 00:00 in that zone (aware; exclusive).
            days: days of history before ``now`` (default 40), as in :meth:`history`
                (and at least today so far).
            baseline: also the customer base's signups and cancellations before the
                window (default True), as in :meth:`history`.
            anchor: the moment the population's signups and cancellations are drawn up
                to (default ``day_end``); a later day's plan keeps its first day's anchor
                so the population does not move (nobody signs up or cancels after it).

        Raises:
            ValueError: for a naive datetime, negative ``days`` or ``now`` outside today.
        """
        if days < 0:
            raise ValueError("days must not be negative")
        now_ms, start_ms, end_ms = (to_epoch_ms(t) for t in (now, day_start, day_end))
        if not start_ms <= now_ms < end_ms:
            raise ValueError("now must lie between day_start and day_end")
        anchor_ms = end_ms if anchor is None else to_epoch_ms(anchor)
        history: list[Event] = []
        rest: list[tuple[int, Event]] = []
        sessions: list[tuple[int, Event]] = []
        window = self._timeline(anchor_ms, min(now_ms - days * DAY_MS, start_ms), end_ms - 1,
                                baseline)
        for ms, event in window:
            if ms <= now_ms:
                history.append(event)
            else:
                rest.append((ms, event))
            if ms >= start_ms and event["type"] not in _LIFECYCLE:
                sessions.append((ms, event))
        return DayPlan(start_ms, end_ms, now_ms, history, rest, sessions)


_LIFECYCLE: Final = frozenset({"signup", "cancellation"})


@dataclass(frozen=True, slots=True)
class DayPlan:
    """One day of the model, split at a moment ``now`` (see :meth:`EventModel.plan_day`).

    Attributes:
        day_start_ms: today's 00:00 in the processor's zone, epoch milliseconds.
        day_end_ms: tomorrow's 00:00 there (exclusive).
        now_ms: where the history ends and the live stream begins.
        history: every event up to ``now_ms`` (back history and today so far), in order.
        rest: ``(ms, event)`` of the rest of today, in time order: the live stream.
        sessions: ``(ms, event)`` of the whole day's activity, visits, conversions and
            answers (no signups or cancellations), replayed once the day is played.
    """

    day_start_ms: int
    day_end_ms: int
    now_ms: int
    history: list[Event]
    rest: list[tuple[int, Event]]
    sessions: list[tuple[int, Event]]


class CompressedDay:
    """Plays the rest of a :class:`DayPlan` at ``speed`` times real time, stamping each
    event with the wall clock when its simulated moment comes.

    The processor's today is the wall clock's day, so the compressed day's events all
    land in today: the users active today are exactly the plan's, whatever the speed.
    Once the simulated clock has passed the end of the day, the day's sessions (never its
    signups or cancellations) are played again with fresh event ids, at the same pace:
    more use by the same people, so traffic goes on while today's active users, and the
    ratios, stay those of the whole day. Pure: the caller passes the time.

    Args:
        plan: the day to play.
        speed: simulated seconds per real second (> 0), e.g. 144 for a day in 10 minutes.
        seed: seed of the replayed events' ids.
    """

    def __init__(self, plan: DayPlan, speed: float, seed: int = 1) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.plan = plan
        self.speed = speed
        self._rng = random.Random(f"{seed}:replay")
        self._next = 0
        self._cycle = 0
        self._replayed = 0

    def sim_ms(self, elapsed: float) -> int:
        """The simulated clock ``elapsed`` real seconds after the start, epoch ms."""
        return self.plan.now_ms + int(elapsed * self.speed * 1000)

    def played(self, elapsed: float) -> bool:
        """Whether the simulated clock has passed the end of the day."""
        return self.sim_ms(elapsed) >= self.plan.day_end_ms

    def due(self, elapsed: float, wall_ms: int) -> list[Event]:
        """The events whose simulated moment has come by ``elapsed`` real seconds and
        that were not returned before, stamped ``wall_ms`` (epoch ms)."""
        plan, sim = self.plan, self.sim_ms(elapsed)
        out: list[Event] = []
        rest = plan.rest
        while self._next < len(rest) and rest[self._next][0] <= sim:
            out.append(restamp(rest[self._next][1], wall_ms))
            self._next += 1
        sessions = plan.sessions
        if self._next < len(rest) or not sessions:
            return out
        day = plan.day_end_ms - plan.day_start_ms
        # After a long stall (a suspended laptop) play on from the current replay rather
        # than catching up on every replay missed, which would flood the broker.
        current = (sim - plan.day_end_ms) // day
        if current > self._cycle + 1:
            self._cycle, self._replayed = current, 0
        while True:
            ms, event = sessions[self._replayed]
            if plan.day_end_ms + self._cycle * day + (ms - plan.day_start_ms) > sim:
                return out
            out.append(restamp(event, wall_ms, f"{self._rng.getrandbits(128):032x}"))
            self._replayed += 1
            if self._replayed == len(sessions):
                self._replayed = 0
                self._cycle += 1


def restamp(event: Event, ms: int, event_id: str | None = None) -> Event:
    """A copy of ``event`` with ``ts`` moved to ``ms`` (epoch ms) in the same shape
    (epoch ms, UTC with or without milliseconds, or local time with the same offset),
    and with ``event_id`` when given."""
    out = dict(event)
    ts = event["ts"]
    if isinstance(ts, int):
        out["ts"] = ms
    elif ts.endswith("Z"):
        out["ts"] = _fmt_z_millis(ms) if "." in ts else _fmt_z(ms)
    else:
        sign = -1 if ts[-6] == "-" else 1
        out["ts"] = _fmt_local(ms, sign * (int(ts[-5:-3]) * 60 + int(ts[-2:])))
    if event_id is not None:
        out["event_id"] = event_id
    return out


_Push = Callable[[int, Callable[[], Event]], None]


def _same(event: Event) -> Event:
    return event


# ----------------------------------------------------------------------- bad messages

BAD_MESSAGE_REASONS: Final[dict[str, str]] = {
    "not_json": "invalid_json",
    "truncated_json": "invalid_json",
    "empty": "invalid_json",
    "nan_score": "invalid_json",
    "not_object": "invalid_event",
    "missing_user_id": "invalid_event",
    "null_ts": "invalid_event",
    "unknown_type": "invalid_event",
    "score_out_of_range": "invalid_event",
    "score_as_string": "invalid_event",
    "ts_without_offset": "invalid_event",
    "late": "late",
    "future": "future",
}
"""Every kind :func:`bad_message` makes, with the dead-letter reason it must get."""


def bad_message(rng: random.Random, now: datetime | None = None, kind: str | None = None) -> bytes:
    """Raw bytes of one message the processor must dead-letter.

    Args:
        rng: the random source (so a seeded demo injects the same faults).
        now: the producer's clock; needed for ``future`` (skipped when absent) and used
            for the base ``ts`` so only the intended fault is wrong (default: none).
        kind: one of :data:`BAD_MESSAGE_REASONS`, or None (default) for a random one.

    Returns:
        The message value; :data:`BAD_MESSAGE_REASONS` gives the expected reason.
    """
    if kind is None:
        kinds = [k for k in BAD_MESSAGE_REASONS if now is not None or k != "future"]
        kind = kinds[int(rng.random() * len(kinds))]
    elif kind not in BAD_MESSAGE_REASONS:
        raise ValueError(f"unknown bad message kind {kind!r}")
    elif kind == "future" and now is None:
        raise ValueError("a 'future' message needs now")
    now_ms = to_epoch_ms(now) if now is not None else 1_767_225_600_000  # 2026-01-01
    event: dict[str, Any] = {
        "event_id": f"bad-{rng.getrandbits(96):024x}",
        "type": "survey",
        "user_id": f"u{int(rng.random() * 100_000):06d}",
        "ts": _fmt_z(now_ms),
        "survey": "nps",
        "score": 7,
    }
    match kind:
        case "not_json":
            return b"user u000042 clicked <button> at 10:00"
        case "truncated_json":
            return json.dumps(event).encode()[:-9]
        case "empty":
            return b""
        case "nan_score":
            return json.dumps(event).replace('"score": 7', '"score": NaN').encode()
        case "not_object":
            return json.dumps([event]).encode()
        case "missing_user_id":
            del event["user_id"]
        case "null_ts":
            event["ts"] = None
        case "unknown_type":
            event["type"] = "purchase"
        case "score_out_of_range":
            event["score"] = 11 if rng.random() < 0.5 else -1
        case "score_as_string":
            event["score"] = "9"
        case "ts_without_offset":
            event["ts"] = _fmt_z(now_ms)[:-1].replace("T", " ")
        case "late":
            event["ts"] = _fmt_z(now_ms - 3650 * DAY_MS)  # ten years back
        case "future":
            event["ts"] = _fmt_z(now_ms + DAY_MS)
    return json.dumps(event).encode()

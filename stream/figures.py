"""Pure: raw numbers read from Redis -> the figures of the contract's section 3.

Every figure's computation lives here once (its name, help text and labels in
`catalogue.py`); the Prometheus collector and `report` both call `compute`. A figure
whose denominator is 0 is left out (never NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import campaigns
from .catalogue import PREVIOUS_DAY_FIGURES, SEGMENT_FIGURES, TOTALS
from .events import DEAD_LETTER_REASONS, EVENT_TYPES, IGNORED_REASONS, UNMAPPED
from .store.wire import (
    CHURNED_DIFF,
    COHORT_KIND,
    CONVERSION_KIND,
    CUSTOMERS_DIFF,
    FORGOTTEN_FIELD,
    LATE_AGES,
    RETAINED_KIND,
    SCAN_AT,
    SCAN_TODAY,
    SEGMENT_CHURNED_DIFF,
    SEGMENT_CUSTOMERS_DIFF,
    VISIT_KIND,
    cohort_field,
    days_active_field,
    dead_letter_field,
    ignored_field,
    late_field,
    lifecycle_field,
    parse_counter,
    parse_segment_diff,
    parse_segment_field,
    survey_kind,
    type_field,
)

#: Promoters answer 9-10, detractors 0-6 (passives 7-8 count only in the total).
NPS_PROMOTER_MIN = 9
NPS_DETRACTOR_MAX = 6
#: CSAT answers of 4 or 5 stars count as satisfied.
CSAT_SATISFIED_MIN = 4
#: Days of the rolling windows: the churn window starts at 00:00 of `today - 29`.
WINDOW_DAYS = 30


@dataclass(slots=True)
class RawFigures:
    """Numbers as stored, summed over shards, for local day `today`: the figures they give
    are those as of the end of that day (today: as of now).

    - unique counts (HyperLogLog estimates): `dau`, `wau` (7 days), `mau` (30 days),
      `calendar_mau`, `prev_dau` (yesterday), `prev_mau` (30 days ending yesterday)
    - `diffs`: churn difference arrays `D:<day>`, `N:<day>`; a figure for day x is the
      sum of its entries at days <= x
    - `first_week`: (cohort, participants) of the first-week figure
    - `window_counters`: per-day counters summed over the rolling 30 days
      (`v:<campaign>`, `c:<campaign>`, `nps:<score>`, `csat:<score>`); the store may
      give only the top campaigns and `v:other`/`c:other` holding the rest's sums
    - `totals`: all-time counters `e:<type>`, `dl:<reason>`
    - `previous`: the same numbers for the day before (its own `prev_*`, `totals` and
      `previous` left empty), when read with them: the `previous_day_*` figures
    """

    today: int
    dau: int = 0
    wau: int = 0
    mau: int = 0
    calendar_mau: int = 0
    prev_dau: int = 0
    prev_mau: int = 0
    diffs: dict[str, int] = field(default_factory=dict)
    first_week: tuple[int, int] = (0, 0)
    window_counters: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    previous: RawFigures | None = None
    segments: SegmentRaw | None = None
    #: the latest user scan (`P:scan`, stream/scan.py): days-active and lifecycle counts
    scan: dict[str, str] = field(default_factory=dict)
    #: campaigns with a `conversion_ratio` series of their own (stream/campaigns.py)
    campaign_max_series: int = campaigns.DEFAULT_MAX_SERIES
    #: signup cohorts (lua/cohort.lua): `c:<N>` cohort size and `r:<N>` retained on day
    #: s+N, for N in COHORT_DAYS; a cohort left out is absent
    cohorts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SegmentRaw:
    """Numbers behind the segment figures (STREAM_SEGMENTS), summed over shards:
    `values` dimension -> its segment values (registry plus `none` and `other`);
    `dau`/`wau`/`mau` (dimension, value) -> unique counts of today, 7 and 30 days;
    `diffs` churn difference arrays `sD:<dim>:<value>:<day>`, `sN:...`;
    `window_counters` `s:<kind>:<dim>:<value>` over the rolling 30 days."""

    values: dict[str, list[str]] = field(default_factory=dict)
    dau: dict[tuple[str, str], int] = field(default_factory=dict)
    wau: dict[tuple[str, str], int] = field(default_factory=dict)
    mau: dict[tuple[str, str], int] = field(default_factory=dict)
    diffs: dict[str, int] = field(default_factory=dict)
    window_counters: dict[str, int] = field(default_factory=dict)
    #: signup cohorts by segment: (`c` or `r`, N, dimension, value) -> users
    cohorts: dict[tuple[str, int, str, str], int] = field(default_factory=dict)


def prefix_sums(diffs: dict[str, int], names: tuple[str, ...], upto: dict[str, int | None]) -> (
    dict[str, int]
):
    """Sum each difference array `name` over days <= upto[name] (None: all days)."""
    out = dict.fromkeys(names, 0)
    for key, value in diffs.items():
        name, _, day = key.partition(":")
        if name in out:
            limit = upto[name]
            if limit is None or int(day) <= limit:
                out[name] += value
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def compute(raw: RawFigures) -> dict[str, Any]:
    """The figures as `report --json` prints them (metric names without `engagement_`),
    as of the end of local day `raw.today` (for today: as of now).

    Counts are ints, ratios 0-1 floats, `nps_score` -100..100; labelled figures are
    dicts keyed by the label value. With `raw.previous`, the `previous_day_*` family is
    added: each figure of PREVIOUS_DAY_FIGURES as of the end of the day before, so a
    complete day that no longer moves (alerts on it have no intraday sawtooth)."""
    today = raw.today
    churn_start = today - (WINDOW_DAYS - 1)
    # `D:<x>` is the customers at 00:00 of day x: at the end of `today` is 00:00 of
    # today + 1. The churn denominator is those at 00:00 of the window's first day; `N:`
    # counts those of them with a cancellation within the 30 days from that day (so a
    # past day's churn ignores cancellations after it).
    d, n = CUSTOMERS_DIFF, CHURNED_DIFF
    sums = prefix_sums(raw.diffs, (d, n), {d: churn_start, n: churn_start})
    customers = prefix_sums(raw.diffs, (d,), {d: today + 1})[d]
    out: dict[str, Any] = {
        "daily_active_users": raw.dau,
        "weekly_active_users": raw.wau,
        "monthly_active_users": raw.mau,
        "calendar_month_active_users": raw.calendar_mau,
        "customers": customers,
    }
    optional: dict[str, float | int | None] = {
        "stickiness_ratio": _ratio(raw.dau, raw.mau),
        "previous_day_stickiness_ratio": _ratio(raw.prev_dau, raw.prev_mau),
    }
    churn = _ratio(sums[n], sums[d])
    optional["churn_ratio"] = churn
    optional["retention_ratio"] = None if churn is None else 1.0 - churn

    counters = raw.window_counters
    visits: dict[str, int] = {}
    conversions: dict[str, int] = {}
    nps = [0] * 11
    csat = [0] * 6
    for key, value in counters.items():
        kind, rest = parse_counter(key)
        if kind == VISIT_KIND:
            visits[rest] = visits.get(rest, 0) + value
        elif kind == CONVERSION_KIND:
            conversions[rest] = conversions.get(rest, 0) + value
        elif kind == "nps":
            nps[int(rest)] += value
        elif kind == "csat":
            csat[int(rest)] += value
    nps_total = sum(nps)
    promoters = sum(nps[NPS_PROMOTER_MIN:])
    detractors = sum(nps[: NPS_DETRACTOR_MAX + 1])
    optional["nps_score"] = (
        100.0 * (promoters - detractors) / nps_total if nps_total > 0 else None
    )
    csat_total = sum(csat)
    optional["csat_ratio"] = _ratio(sum(csat[CSAT_SATISFIED_MIN:]), csat_total)
    optional["first_week_active_ratio"] = _ratio(raw.first_week[1], raw.first_week[0])
    for name, figure in optional.items():
        if figure is not None:
            out[name] = figure
    out["conversion_ratio"] = campaigns.ratios(visits, conversions, raw.campaign_max_series)
    totals = raw.totals
    out["events_total"] = {t: totals.get(type_field(t), 0) for t in EVENT_TYPES}
    out["dead_letter_total"] = {
        r: totals.get(dead_letter_field(r), 0) for r in DEAD_LETTER_REASONS
        if r != "processing_error"
    }
    if totals.get(dead_letter_field("processing_error")):
        out["dead_letter_total"]["processing_error"] = totals[
            dead_letter_field("processing_error")]
    out.update(cohort_figures(raw.cohorts))
    out["late_events_total"] = {a: totals.get(late_field(a), 0) for a in LATE_AGES}
    out["users_forgotten_total"] = totals.get(FORGOTTEN_FIELD, 0)
    if totals.get(dead_letter_field("unreadable_batch")):
        out["dead_letter_total"]["unreadable_batch"] = totals[
            dead_letter_field("unreadable_batch")]
    if totals.get(dead_letter_field(UNMAPPED)):
        out["dead_letter_total"][UNMAPPED] = totals[dead_letter_field(UNMAPPED)]
    out["ignored_total"] = {r: totals.get(ignored_field(r), 0) for r in IGNORED_REASONS}
    if raw.segments is not None:
        out.update(segment_figures(raw.segments, today))
        out.update(segment_cohort_figures(raw.segments))
    if raw.scan.get(SCAN_TODAY) == str(today):
        out.update(scan_figures(raw.scan))
    if raw.previous is not None:
        before = compute(raw.previous)
        for name in PREVIOUS_DAY_FIGURES:
            if name in before:
                out["previous_day_" + name] = before[name]
    return out


LIFECYCLE_STATES = ("new", "returning", "resurrecting", "dormant")
def scan_figures(scan: dict[str, str]) -> dict[str, Any]:
    """Days-active distribution and lifecycle from a user scan of today (see README):
    `days_active_users` {"7d": {k: users}, "30d": {...}}, `lifecycle_users` {state: users},
    their `previous_day_*` (as of the end of yesterday) and the scan's unix time."""
    out: dict[str, Any] = {}
    for o, prefix in ((0, ""), (1, "previous_day_")):
        out[prefix + "days_active_users"] = {
            f"{n}d": {str(k): int(scan.get(days_active_field(o, n, k), 0))
                      for k in range(1, n + 1)}
            for n in (7, 30)}
        out[prefix + "lifecycle_users"] = {
            s: int(scan.get(lifecycle_field(o, s), 0)) for s in LIFECYCLE_STATES}
    out["days_active_computed_timestamp_seconds"] = float(scan.get(SCAN_AT, 0))
    return out


def segment_figures(seg: SegmentRaw, today: int) -> dict[str, Any]:
    """The `segment_*` figures: each a dict dimension -> value -> figure, the same
    definitions as the unsegmented figure restricted to the segment (see the README)."""
    churn_start = today - (WINDOW_DAYS - 1)
    d_at: dict[tuple[str, str], int] = {}
    n_at: dict[tuple[str, str], int] = {}
    cust: dict[tuple[str, str], int] = {}
    for key, value in seg.diffs.items():
        kind, dim, v, day = parse_segment_diff(key)
        pair = (dim, v)
        if kind == SEGMENT_CUSTOMERS_DIFF:
            if day <= today + 1:
                cust[pair] = cust.get(pair, 0) + value
            if day <= churn_start:
                d_at[pair] = d_at.get(pair, 0) + value
        elif kind == SEGMENT_CHURNED_DIFF and day <= churn_start:
            n_at[pair] = n_at.get(pair, 0) + value
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for key, value in seg.window_counters.items():
        kind, dim, v = parse_segment_field(key)
        per = counts.setdefault((dim, v), {})
        per[kind] = per.get(kind, 0) + value
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SEGMENT_FIGURES}
    for dim, values in seg.values.items():
        for name in SEGMENT_FIGURES:
            out[name][dim] = {}
        for v in values:
            pair = (dim, v)
            row: dict[str, float | int | None] = {
                "daily_active_users": seg.dau.get(pair, 0),
                "weekly_active_users": seg.wau.get(pair, 0),
                "monthly_active_users": seg.mau.get(pair, 0),
                "customers": cust.get(pair, 0),
            }
            row["stickiness_ratio"] = _ratio(seg.dau.get(pair, 0), seg.mau.get(pair, 0))
            churn = _ratio(n_at.get(pair, 0), d_at.get(pair, 0))
            row["churn_ratio"] = churn
            row["retention_ratio"] = None if churn is None else 1.0 - churn
            per = counts.get(pair, {})
            row["conversion_ratio"] = _ratio(per.get("c", 0), per.get("v", 0))
            nps = [per.get(survey_kind("nps", s), 0) for s in range(11)]
            row["nps_score"] = (
                100.0 * (sum(nps[NPS_PROMOTER_MIN:]) - sum(nps[:NPS_DETRACTOR_MAX + 1]))
                / sum(nps) if sum(nps) else None)
            csat = [per.get(survey_kind("csat", s), 0) for s in range(6)]
            row["csat_ratio"] = _ratio(sum(csat[CSAT_SATISFIED_MIN:]), sum(csat))
            for name, figure in row.items():
                if figure is not None:
                    out["segment_" + name][dim][v] = figure
    return out


def as_of_day(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures of a past day: the all-time totals left out (no history is kept of
    them, so today's values would pass for that day's)."""
    return {k: v for k, v in figures.items() if k not in TOTALS}


# -- signup cohorts and late events (the second release) --------------------------------

#: Day-N retention of signup cohorts is exported for these N.
COHORT_DAYS: tuple[int, ...] = (1, 7, 14, 30)
#: Days in a signup cohort: the 7 signup days ending N days before yesterday.
COHORT_SPAN = 7
#: The late-event counters (`late:<age>`, age buckets LATE_AGES by `late_age`) are part
#: of the field grammar in stream/store/wire.py.


def cohort_figures(cohorts: dict[str, int]) -> dict[str, Any]:
    """`cohort_users` and `cohort_retention_ratio`, keyed by N as text; a cohort of no
    user (or one left out) has neither."""
    users = {str(n): cohorts[cohort_field(COHORT_KIND, n)] for n in COHORT_DAYS
             if cohorts.get(cohort_field(COHORT_KIND, n), 0) > 0}
    return {"cohort_retention_ratio": {n: cohorts[cohort_field(RETAINED_KIND, int(n))] / c
                                       for n, c in users.items()},
            "cohort_users": users}


def segment_cohort_figures(seg: SegmentRaw) -> dict[str, Any]:
    """`segment_cohort_retention_ratio` and `segment_cohort_users`: dimension -> value ->
    N -> figure; a user counts in the segment of the signup that put them in the cohort.
    Every dimension is listed (values only with a cohort)."""
    ratio: dict[str, dict[str, dict[str, float]]] = {dim: {} for dim in seg.values}
    users: dict[str, dict[str, dict[str, int]]] = {dim: {} for dim in seg.values}
    for (kind, n, dim, v), c in sorted(seg.cohorts.items()):
        if kind == COHORT_KIND and c > 0:
            users.setdefault(dim, {}).setdefault(v, {})[str(n)] = c
            ratio.setdefault(dim, {}).setdefault(v, {})[str(n)] = (
                seg.cohorts.get((RETAINED_KIND, n, dim, v), 0) / c)
    return {"segment_cohort_retention_ratio": ratio, "segment_cohort_users": users}

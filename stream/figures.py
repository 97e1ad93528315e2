"""Pure: raw numbers read from Redis -> the figures of the contract's section 3.

Every figure's definition lives here once; the Prometheus collector and `report` both
call `compute`. A figure whose denominator is 0 is left out (never NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import DEAD_LETTER_REASONS, EVENT_TYPES

#: Promoters answer 9-10, detractors 0-6 (passives 7-8 count only in the total).
NPS_PROMOTER_MIN = 9
NPS_DETRACTOR_MAX = 6
#: CSAT answers of 4 or 5 stars count as satisfied.
CSAT_SATISFIED_MIN = 4
#: Days of the rolling windows: the churn window starts at 00:00 of `today - 29`.
WINDOW_DAYS = 30


@dataclass(slots=True)
class RawFigures:
    """Numbers as stored, summed over shards, for local day `today`.

    - unique counts (HyperLogLog estimates): `dau`, `wau` (7 days), `mau` (30 days),
      `calendar_mau`, `prev_dau` (yesterday), `prev_mau` (30 days ending yesterday)
    - `diffs`: difference arrays `D:<day>`, `N:<day>`, `FD:<day>`, `FN:<day>`; a figure
      for day x is the sum of its entries at days <= x
    - `window_counters`: per-day counters summed over the rolling 30 days
      (`v:<campaign>`, `c:<campaign>`, `nps:<score>`, `csat:<score>`)
    - `totals`: all-time counters `e:<type>`, `dl:<reason>`
    """

    today: int
    dau: int = 0
    wau: int = 0
    mau: int = 0
    calendar_mau: int = 0
    prev_dau: int = 0
    prev_mau: int = 0
    diffs: dict[str, int] = field(default_factory=dict)
    window_counters: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)


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
    """The figures as `report --json` prints them (metric names without `engagement_`).

    Counts are ints, ratios 0-1 floats, `nps_score` -100..100; labelled figures are
    dicts keyed by the label value."""
    today = raw.today
    churn_start = today - (WINDOW_DAYS - 1)
    sums = prefix_sums(
        raw.diffs, ("D", "N", "FD", "FN"),
        {"D": churn_start, "N": churn_start, "FD": today, "FN": today},
    )
    customers = sum(v for k, v in raw.diffs.items() if k.startswith("D:"))
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
    churn = _ratio(sums["N"], sums["D"])
    optional["churn_ratio"] = churn
    optional["retention_ratio"] = None if churn is None else 1.0 - churn

    counters = raw.window_counters
    visits: dict[str, int] = {}
    conversions: dict[str, int] = {}
    nps = [0] * 11
    csat = [0] * 6
    for key, value in counters.items():
        kind, _, rest = key.partition(":")
        if kind == "v":
            visits[rest] = visits.get(rest, 0) + value
        elif kind == "c":
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
    optional["first_week_active_ratio"] = _ratio(sums["FN"], sums["FD"])
    for name, figure in optional.items():
        if figure is not None:
            out[name] = figure
    out["conversion_ratio"] = {
        campaign: conversions.get(campaign, 0) / n
        for campaign, n in sorted(visits.items())
        if n > 0
    }
    totals = raw.totals
    out["events_total"] = {t: totals.get(f"e:{t}", 0) for t in EVENT_TYPES}
    out["dead_letter_total"] = {
        r: totals.get(f"dl:{r}", 0) for r in DEAD_LETTER_REASONS if r != "processing_error"
    }
    if totals.get("dl:processing_error"):
        out["dead_letter_total"]["processing_error"] = totals["dl:processing_error"]
    return out


#: Prometheus metric name suffix -> help text, in the contract's order.
METRICS: dict[str, str] = {
    "daily_active_users": "Distinct users with activity today (HyperLogLog estimate).",
    "weekly_active_users": "Distinct active users over the rolling 7 days (estimate).",
    "monthly_active_users": "Distinct active users over the rolling 30 days (estimate).",
    "calendar_month_active_users": "Distinct active users in the current calendar month.",
    "stickiness_ratio": "Daily active users / monthly active users (0-1).",
    "previous_day_stickiness_ratio":
        "Active users of yesterday / active users of the 30 days ending yesterday (0-1).",
    "customers": "Users whose latest signup/cancellation (by event time) is a signup.",
    "churn_ratio":
        "Share of customers at the start of the rolling 30 days that cancelled within them.",
    "retention_ratio": "1 - churn ratio.",
    "conversion_ratio": "Conversions / visits of the campaign over the rolling 30 days.",
    "nps_score": "Net Promoter Score over the rolling 30 days (-100..100).",
    "csat_ratio": "Share of CSAT answers of 4 or 5 over the rolling 30 days (0-1).",
    "first_week_active_ratio":
        "Share of customers who signed up 8-37 days ago active in their first week.",
    "events_total": "Valid events consumed, by type (all workers, from Redis).",
    "dead_letter_total": "Messages dead-lettered, by reason (all workers, from Redis).",
}

"""Pure: the one list of figures, from which every consumer of their names is derived.

Each entry is one exported metric family (`engagement_<name>`), in the order `/metrics`
lists them. The collector renders the families from it, `figures.compute` takes its
previous-day, totals, scan and segment sets from it, `report` and the live view take
their rows from it, and the Prometheus rule and Grafana dashboard generators take the
recorded figures from it. Adding a figure means adding its entry here and its
computation in `figures.py`, nothing else.

A variant (the `previous_day_*` figure as of the end of yesterday, the `segment_*`
figure restricted to one segment) is an entry of its own, naming the figure it is a
variant `of`: it has its own help text, and its place in the exposition is its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Prefix of every exported metric name.
PREFIX = "engagement_"

#: Where a figure's value comes from (`figures.compute`):
#: - window: today's read (rolling windows and counts)
#: - previous_day: copied from the previous day's read (`RawFigures.previous`)
#: - totals: all-time counters; no value for a past day (`figures.as_of_day`)
#: - scan: the latest user scan (`P:scan`), as of the scan
#: - cohort: signup cohorts
#: - segment, segment_cohort: by segment (STREAM_SEGMENTS); absent without segments
Group = Literal["window", "previous_day", "totals", "scan", "cohort", "segment",
                "segment_cohort"]
#: How a value reads: a number of users or events, a 0-1 share, the NPS (-100..100), or
#: a unix time.
Unit = Literal["count", "ratio", "score", "timestamp"]


@dataclass(frozen=True, slots=True)
class Live:
    """The figure's row in the demo's live view: its place (`row`, top first), its short
    `title`, and whether the one-line output (not a terminal) shows it too."""

    row: int
    title: str
    in_line: bool = False


@dataclass(frozen=True, slots=True)
class Stat:
    """The figure's headline panel on the Grafana dashboard (deploy/grafana/dashboard.py):
    its place (`row`, first on the left), `title`, `description` and the decimals shown
    (None: Grafana's choice)."""

    row: int
    title: str
    description: str
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class Figure:
    """One exported figure.

    `labels` name the nesting of its value in `figures.compute`'s output: none is a
    number, one a dict label value -> number, two a dict of such dicts, and so on. A
    counter's name ends in `_total`; its metric family is built without it
    (prometheus_client adds it back). `title` is its row in `report`'s table (empty: not a row
    there); `recorded` gives it a `job...:<metric>:max` recording rule (`max_series`);
    `graphed` puts it on the live view's Prometheus graph link; `stat` gives it a headline
    panel on the dashboard."""

    name: str
    help: str
    group: Group
    unit: Unit = "count"
    labels: tuple[str, ...] = ()
    counter: bool = False
    #: the figure this one is a variant of, and which variant
    of: str = ""
    variant: Literal["", "previous_day", "segment"] = ""
    title: str = ""
    live: Live | None = None
    recorded: bool = False
    graphed: bool = False
    stat: Stat | None = None

    @property
    def metric(self) -> str:
        """The exported metric name, `engagement_<name>`."""
        return PREFIX + self.name

    @property
    def max_series(self) -> str:
        """The series of its recording rule, `job[_<label>...]:<metric>:max`: the figure
        taken once over the replicas (every worker exports the same value), by its labels
        besides `job`."""
        return "job" + "".join("_" + label for label in self.labels) + f":{self.metric}:max"

    @property
    def optional(self) -> bool:
        """Absent from the figures when not configured or not computed yet (segments,
        the user scan): then not exported at all, where a missing labelled figure of the
        other groups is exported as a family without samples."""
        return self.group in ("scan", "segment", "segment_cohort")


_SEG = ("dimension", "value")


def _prev(of: str, help: str, group: Group = "previous_day", unit: Unit = "count",
          labels: tuple[str, ...] = (), title: str = "", recorded: bool = False,
          stat: Stat | None = None) -> Figure:
    return Figure("previous_day_" + of, help, group, unit, labels, of=of,
                  variant="previous_day", title=title, recorded=recorded, stat=stat)


def _seg(of: str, help: str, unit: Unit = "count", recorded: bool = True) -> Figure:
    return Figure("segment_" + of, help, "segment", unit, _SEG, of=of, variant="segment",
                  recorded=recorded)


#: Every figure, in the order of the exposition (the contract's section 3, then the
#: later releases' figures).
CATALOGUE: tuple[Figure, ...] = (
    Figure("daily_active_users",
           "Distinct users with activity today (HyperLogLog estimate).", "window",
           title="Daily active users", live=Live(0, "Daily active users", in_line=True),
           recorded=True, graphed=True,
           stat=Stat(0, "Daily active users", "Distinct users with activity today.")),
    Figure("weekly_active_users",
           "Distinct active users over the rolling 7 days (estimate).", "window",
           title="Weekly active users", live=Live(1, "Weekly active users"), recorded=True,
           stat=Stat(1, "Weekly active users",
                     "Distinct active users over the rolling 7 days.")),
    Figure("monthly_active_users",
           "Distinct active users over the rolling 30 days (estimate).", "window",
           title="Monthly active users (30 d)", live=Live(2, "Monthly active (30 d)"),
           recorded=True, stat=Stat(2, "Monthly active users",
                                    "Distinct active users over the rolling 30 days.")),
    Figure("calendar_month_active_users",
           "Distinct active users in the current calendar month.", "window",
           title="Active users this month", recorded=True,
           stat=Stat(11, "Calendar-month active users",
                     "Distinct active users in the current calendar month.")),
    Figure("stickiness_ratio", "Daily active users / monthly active users (0-1).", "window",
           "ratio", title="Stickiness (DAU/MAU)",
           live=Live(3, "Stickiness DAU/MAU", in_line=True), recorded=True, graphed=True,
           stat=Stat(3, "Stickiness (DAU/MAU)",
                     "Today's active users over the rolling 30 days' active users. Today is"
                     " partial, so it rises through the day.", decimals=1)),
    # Computed by `compute` from today's read (its prev_* counts), not copied from the
    # previous day's read.
    _prev("stickiness_ratio",
          "Active users of yesterday / active users of the 30 days ending yesterday (0-1).",
          "window", "ratio", title="Stickiness yesterday", recorded=True,
          stat=Stat(4, "Yesterday's stickiness", "Stickiness of the last complete day, the "
                    "figure the stickiness alert uses.", decimals=1)),
    Figure("customers",
           "Users whose latest signup/cancellation (by event time) is a signup.", "window",
           title="Customers", live=Live(4, "Customers", in_line=True), recorded=True,
           stat=Stat(5, "Customers", "Users whose latest signup/cancellation is a signup.")),
    Figure("churn_ratio",
           "Share of customers at the start of the rolling 30 days that cancelled within "
           "them.", "window", "ratio", title="Churn (30 d)", live=Live(5, "Churn (30 d)"),
           recorded=True,
           stat=Stat(6, "Churn (30 days)", "Share of the customers at the start of the "
                     "rolling 30 days who cancelled.", decimals=2)),
    Figure("retention_ratio", "1 - churn ratio.", "window", "ratio",
           title="Retention (30 d)", recorded=True,
           stat=Stat(7, "Retention (30 days)", "1 - churn.", decimals=2)),
    Figure("conversion_ratio",
           "Conversions / visits of the campaign over the rolling 30 days; the campaigns "
           "beyond STREAM_CAMPAIGN_MAX_SERIES (by visits) summed as campaign=\"other\".",
           "window", "ratio", ("campaign",), recorded=True, graphed=True),
    Figure("nps_score", "Net Promoter Score over the rolling 30 days (-100..100).",
           "window", "score", title="NPS (30 d)", live=Live(7, "NPS (30 d)", in_line=True),
           recorded=True, graphed=True,
           stat=Stat(8, "NPS (30 days)", "100 x (promoters - detractors) / answers over "
                     "the rolling 30 days.", decimals=0)),
    Figure("csat_ratio", "Share of CSAT answers of 4 or 5 over the rolling 30 days (0-1).",
           "window", "ratio", title="CSAT 4-5 share (30 d)",
           live=Live(8, "CSAT 4-5 (30 d)", in_line=True), recorded=True,
           stat=Stat(9, "CSAT (30 days)", "Share of CSAT answers that are 4 or 5 over the "
                     "rolling 30 days.", decimals=1)),
    Figure("first_week_active_ratio",
           "Share of customers who signed up 8-37 days ago active in their first week.",
           "window", "ratio", title="First-week participation",
           live=Live(6, "First-week active"), recorded=True,
           stat=Stat(10, "First-week participation", "Of the customers who signed up 8 to "
                     "37 days ago, the share active on days 1-7 after their signup day.",
                     decimals=1)),
    Figure("events_total", "Valid events consumed, by type (all workers, from Redis).",
           "totals", labels=("type",), counter=True),
    Figure("dead_letter_total",
           "Messages dead-lettered, by reason (all workers, from Redis).", "totals",
           labels=("reason",), counter=True),
    Figure("ignored_total",
           "Messages of a mapped format that became no event, by reason (all workers, "
           "from Redis).", "totals", labels=("reason",), counter=True),
    # The `previous_day_*` family: yesterday's complete figures, for alerting.
    _prev("daily_active_users", "Distinct users with activity yesterday (estimate)."),
    _prev("weekly_active_users",
          "Distinct active users over the 7 days ending yesterday (estimate)."),
    _prev("monthly_active_users",
          "Distinct active users over the 30 days ending yesterday (estimate)."),
    _prev("calendar_month_active_users",
          "Distinct active users in yesterday's calendar month up to yesterday (estimate)."),
    _prev("customers", "Customers at the end of yesterday."),
    _prev("churn_ratio",
          "Churn ratio of the 30 days ending yesterday (cancellations after it not counted).",
          unit="ratio"),
    _prev("retention_ratio", "1 - previous-day churn ratio.", unit="ratio"),
    _prev("conversion_ratio",
          "Conversions / visits of the campaign over the 30 days ending yesterday "
          "(campaigns beyond STREAM_CAMPAIGN_MAX_SERIES as campaign=\"other\").",
          unit="ratio", labels=("campaign",)),
    _prev("nps_score", "Net Promoter Score over the 30 days ending yesterday.",
          unit="score"),
    _prev("csat_ratio",
          "Share of CSAT answers of 4 or 5 over the 30 days ending yesterday (0-1).",
          unit="ratio"),
    _prev("first_week_active_ratio",
          "First-week active ratio as of yesterday (signups 8-37 days before yesterday).",
          unit="ratio"),
    # Figures by segment (STREAM_SEGMENTS): `segment_<name>` is `<name>` restricted to the
    # users or events of one segment, exported with labels `dimension` and `value`.
    _seg("daily_active_users", "Distinct users with activity today in the segment."),
    _seg("weekly_active_users",
         "Distinct users with activity in the segment over the rolling 7 days.",
         recorded=False),
    _seg("monthly_active_users",
         "Distinct users with activity in the segment over the rolling 30 days."),
    _seg("stickiness_ratio", "Segment daily / monthly active users (0-1).", "ratio"),
    _seg("customers", "Customers whose latest signup is in the segment."),
    _seg("churn_ratio",
         "Churn ratio of the customers in the segment at the start of the rolling 30 days.",
         "ratio"),
    _seg("retention_ratio", "1 - segment churn ratio.", "ratio", recorded=False),
    _seg("conversion_ratio",
         "Conversions / visits of the segment (all campaigns) over the rolling 30 days.",
         "ratio"),
    _seg("nps_score", "Net Promoter Score of the segment's answers over 30 days.", "score"),
    _seg("csat_ratio", "Share of the segment's CSAT answers of 4 or 5 over 30 days.",
         "ratio"),
    # The periodic user scan: as of the scan, not of the read.
    Figure("days_active_users",
           "Users active on exactly `days` of the last 7 or 30 days (`window`), exact, "
           "from the latest user scan.", "scan", labels=("window", "days"), recorded=True),
    Figure("lifecycle_users",
           "Active users today by lifecycle state (new, returning, resurrecting) and users "
           "turned dormant today, from the latest scan.", "scan", labels=("state",),
           recorded=True),
    _prev("days_active_users", "Days-active distribution as of the end of yesterday.",
          "scan", labels=("window", "days")),
    _prev("lifecycle_users", "Lifecycle counts of yesterday.", "scan", labels=("state",)),
    Figure("days_active_computed_timestamp_seconds",
           "Unix time of the user scan behind the days-active and lifecycle figures.",
           "scan", "timestamp", recorded=True),
    Figure("users_forgotten_total", "Users erased with `forget` (all workers, from Redis).",
           "totals", counter=True),
    # Signup cohorts and late events (the second release).
    Figure("cohort_retention_ratio",
           "Share of the signup cohort of the 7 days ending `day` days before yesterday "
           "active on signup day + `day` (exact).", "cohort", "ratio", ("day",),
           recorded=True),
    Figure("cohort_users", "Users in the signup cohort behind cohort_retention_ratio.",
           "cohort", labels=("day",), recorded=True),
    _prev("cohort_retention_ratio",
          "Day-N retention of signup cohorts as of the end of yesterday.", unit="ratio",
          labels=("day",), recorded=True),
    _prev("cohort_users", "Cohort sizes as of the end of yesterday.", labels=("day",)),
    Figure("late_events_total",
           "Valid events whose day was before today when folded, by days late (`age`).",
           "totals", labels=("age",), counter=True),
    Figure("segment_cohort_retention_ratio",
           "Day-N retention of the signup cohort, by the segment of the cohort signup.",
           "segment_cohort", "ratio", (*_SEG, "day"), of="cohort_retention_ratio",
           variant="segment", recorded=True),
    Figure("segment_cohort_users",
           "Signup cohort sizes by the segment of the cohort signup.", "segment_cohort",
           labels=(*_SEG, "day"), of="cohort_users", variant="segment"),
)

BY_NAME: dict[str, Figure] = {f.name: f for f in CATALOGUE}


def variants(name: str) -> dict[str, Figure]:
    """The variants of figure `name` by kind (`previous_day`, `segment`): which it has."""
    return {f.variant: f for f in CATALOGUE if f.of == name}


def names(*groups: Group) -> tuple[str, ...]:
    """The names of the figures of `groups`, in catalogue order."""
    return tuple(f.name for f in CATALOGUE if f.group in groups)


#: Figures that have a meaning for one past day and whose `previous_day_<name>` is copied
#: from the previous day's read by `figures.compute` (`previous_day_stickiness_ratio` is
#: computed from today's read; the scan's come with the scan).
PREVIOUS_DAY_FIGURES: tuple[str, ...] = tuple(
    f.of for f in CATALOGUE if f.group == "previous_day")
#: Figures that are all-time totals: they have no value for a past day.
TOTALS: tuple[str, ...] = names("totals")
#: Figures of the periodic user scan: as of the scan, not of the read.
SCAN_FIGURES: tuple[str, ...] = names("scan")
#: Figures by segment, labels `dimension` and `value`.
SEGMENT_FIGURES: tuple[str, ...] = names("segment")
#: Segment figures with a third label, `day` (N of the cohort figures).
SEGMENT_COHORT_FIGURES: tuple[str, ...] = names("segment_cohort")

"""Generate the engagement-stream Grafana dashboard with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py          # writes dashboards/engagement-stream.json
    python deploy/grafana/dashboard.py --check  # fails if the committed JSON is out of date

Figures come from the recording rules of deploy/prometheus/rules (job-level series, one per
deployment), named from the figure catalogue (stream/catalogue.py), whose `stat` entries
are the headline panels; per-worker pipeline health is queried from the raw metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableHide,
)

ROOT = Path(__file__).resolve().parents[2]
# The figures come from the catalogue of the checkout this script is in (not of whatever
# engagement-stream is installed).
sys.path.insert(0, str(ROOT))
from stream.catalogue import BY_NAME, CATALOGUE  # noqa: E402

OUTPUT = ROOT / "deploy" / "grafana" / "dashboards" / "engagement-stream.json"
UID = "engagement-stream"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


_ids = _Ids()
Panel = stat.Panel | timeseries.Panel | bargauge.Panel


def _q(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False
) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


def _stat(
    title: str,
    expr: str,
    unit: str,
    description: str,
    *,
    width: int = 4,
    thresholds: dashboard.ThresholdsConfig | None = None,
    decimals: int | None = None,
) -> stat.Panel:
    p = (
        stat.Panel()
        .id(_ids.next())
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(_q(expr))
        .unit(unit)
        .height(4)
        .span(width)
        .graph_mode(BigValueGraphMode.AREA)
        .color_mode(BigValueColorMode.VALUE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(thresholds or _thresholds((None, "blue")))
    )
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def _ts(
    title: str,
    targets: list[prometheus.Dataquery],
    unit: str,
    description: str,
    *,
    width: int = 12,
    stacked: bool = False,
    min_val: float | None = None,
    max_val: float | None = None,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .id(_ids.next())
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(targets)
        .unit(unit)
        .height(8)
        .span(width)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stacked:
        p = p.stacking(StackingConfig().mode(StackingMode.NORMAL))
    if min_val is not None:
        p = p.min(min_val)
    if max_val is not None:
        p = p.max(max_val)
    return p


def _bargauge(
    title: str,
    expr: str,
    legend: str,
    unit: str,
    description: str,
    *,
    width: int,
    decimals: int | None = None,
    max_val: float | None = None,
) -> bargauge.Panel:
    """The latest value of each series of `expr`, one bar each."""
    p = (
        bargauge.Panel()
        .id(_ids.next())
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(_q(expr, legend, instant=True))
        .unit(unit)
        .min(0)
        .height(8)
        .span(width)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(_thresholds((None, "blue")))
    )
    if decimals is not None:
        p = p.decimals(decimals)
    if max_val is not None:
        p = p.max(max_val)
    return p


# Grafana units of the catalogue's units (of the figures shown as they are).
UNITS = {"count": "short", "ratio": "percentunit", "score": "none"}


#: Figures read by a panel so far (by `_max`), for `_unshown_figures`.
_shown: set[str] = set()


def _max(name: str, selector: str = "") -> str:
    """The recorded series (deploy/prometheus/generate.py) of the catalogue's figure `name`:
    a name the catalogue lacks, or a figure without a recording rule, fails the build."""
    figure = BY_NAME[name]
    if not figure.recorded:
        raise ValueError(f"{name} has no recording rule (catalogue: recorded=False)")
    _shown.add(name)
    return figure.max_series + selector


def _unshown_figures() -> list[dashboard.Row | Panel]:
    """A time series for each recorded figure no panel reads, under a row of its own (none
    today): a figure added to the catalogue is on the dashboard before it gets a panel of
    its own. Not the previous-day variants: the figure itself is shown."""
    rest = [f for f in CATALOGUE
            if f.recorded and f.variant != "previous_day" and f.name not in _shown]
    if not rest:
        return []
    return [
        dashboard.Row("Other figures").id(600),
        *(
            _ts(
                f.title or f.name,
                [_q(f.max_series, " ".join("{{" + label + "}}" for label in f.labels) or f.name)],
                UNITS.get(f.unit, "none"),
                f.help,
                min_val=0,
            )
            for f in rest
        ),
    ]


def _headline_stats() -> list[stat.Panel]:
    """One stat panel per figure with a `stat` in the catalogue, in their rows' order."""
    # Colours of the figures with a known good range (churn and CSAT: their alerts' limits).
    thresholds = {
        "churn_ratio": _thresholds((None, "green"), (0.05, "red")),
        "nps_score": _thresholds((None, "red"), (0, "orange"), (30, "green")),
        "csat_ratio": _thresholds((None, "red"), (0.5, "orange"), (0.8, "green")),
    }
    shown = sorted(((f.stat, f) for f in CATALOGUE if f.stat is not None),
                   key=lambda pair: pair[0].row)
    return [
        _stat(s.title, _max(f.name), UNITS[f.unit], s.description,
              thresholds=thresholds.get(f.name), decimals=s.decimals)
        for s, f in shown
    ]


def _by_segment(
    name: str,
    title: str,
    description: str,
    *,
    selector: str = "",
    width: int = 8,
    max_val: float | None = None,
) -> timeseries.Panel:
    """The segment variant of figure `name`, one line per segment value."""
    figure = BY_NAME[name]
    return _ts(
        title,
        [_q(_max(name, selector), "{{dimension}}={{value}}", "A")],
        UNITS[figure.unit],
        description,
        width=width,
        min_val=0,
        max_val=max_val,
    )


def build() -> dict[str, object]:
    _ids.n = 0
    _shown.clear()
    # Rows and panels in their order on the dashboard (panel ids are given in this order).
    items: list[dashboard.Row | Panel] = [
        dashboard.Row("Overview").id(100),
        *_headline_stats(),
        # --- trends
        _ts(
            "Active users",
            [
                _q(_max("daily_active_users"), "DAU", "A"),
                _q(_max("weekly_active_users"), "WAU", "B"),
                _q(_max("monthly_active_users"), "MAU", "C"),
            ],
            "short",
            "Distinct active users today, over 7 and over 30 days.",
            min_val=0,
        ),
        _ts(
            "Stickiness trend",
            [
                _q(_max("stickiness_ratio"), "today (partial day)", "A"),
                _q(_max("previous_day_stickiness_ratio"), "yesterday", "B"),
                _q(
                    "job:engagement_previous_day_stickiness_ratio:avg_over_time7d",
                    "yesterday, 7-day average",
                    "C",
                ),
            ],
            "percentunit",
            "DAU/MAU; the alert compares yesterday's stickiness with its 7-day average.",
            min_val=0,
        ),
        _ts(
            "Churn and retention",
            [
                _q(_max("churn_ratio"), "churn", "A"),
                _q(_max("retention_ratio"), "retention", "B"),
            ],
            "percentunit",
            "Rolling 30-day churn and retention of customers.",
            min_val=0,
            max_val=1,
        ),
        _ts(
            "NPS",
            [
                _q(_max("nps_score"), "NPS", "A"),
                _q("job:engagement_nps_score:avg_over_time7d", "7-day average", "B"),
            ],
            "none",
            "Net Promoter Score over the rolling 30 days (-100 to 100).",
            width=6,
        ),
        _ts(
            "CSAT",
            [_q(_max("csat_ratio"), "CSAT", "A")],
            "percentunit",
            "Share of satisfied (4-5) CSAT answers over the rolling 30 days.",
            width=6,
            min_val=0,
            max_val=1,
        ),
        _bargauge(
            "Conversion by campaign (30 days)",
            _max("conversion_ratio"),
            "{{campaign}}",
            "percentunit",
            "Conversions / visits of each campaign over the rolling 30 days: the"
            " STREAM_CAMPAIGN_MAX_SERIES campaigns with the most visits; `other` sums the"
            " rest.",
            width=12,
            decimals=2,
        ),
        _ts(
            "Conversion by campaign",
            [_q(_max("conversion_ratio"), "{{campaign}}", "A")],
            "percentunit",
            "Rolling 30-day conversion ratio per campaign; the alert compares it with its"
            " 7-day average.",
            min_val=0,
        ),
        _ts(
            "First-week participation",
            [_q(_max("first_week_active_ratio"), "first week", "A")],
            "percentunit",
            "Share of recent signups active in their first week.",
            min_val=0,
            max_val=1,
        ),
        _ts(
            "Customers",
            [_q(_max("customers"), "customers", "A")],
            "short",
            "Current customers.",
            min_val=0,
        ),
        dashboard.Row("Retention cohorts and late data").id(300),
        _ts(
            "Day-N retention of signup cohorts",
            [
                _q(_max("cohort_retention_ratio"), "D{{day}}", "A"),
                _q(
                    'job_day:engagement_cohort_retention_ratio:avg_over_time7d{day="1"}',
                    "D1, 7-day average",
                    "B",
                ),
            ],
            "percentunit",
            "Of the users who signed up on the 7 days ending N days before yesterday, the"
            " share active on their signup day + N (N = 1, 7, 14, 30); the alert compares"
            " D1 with its 7-day average.",
            min_val=0,
            max_val=1,
        ),
        _bargauge(
            "Retention curve",
            _max("cohort_retention_ratio"),
            "D{{day}}",
            "percentunit",
            "The latest day-N retention of each signup cohort, N = 1, 7, 14, 30.",
            width=6,
            decimals=1,
            max_val=1,
        ),
        _ts(
            "Signup cohort sizes",
            [_q(_max("cohort_users"), "D{{day}} cohort", "A")],
            "short",
            "Users in each day-N cohort (signups of 7 days, each user once).",
            width=6,
            min_val=0,
        ),
        _ts(
            "Late events/s by age",
            [_q("job_age:engagement_late_events:rate5m", "{{age}}", "A")],
            "ops",
            "Valid events dated before the day they were folded, by days late: which past"
            " days are still moving.",
            stacked=True,
            min_val=0,
        ),
        _ts(
            "Events older than a week",
            [_q("job:engagement_old_events:ratio_rate5m", "share of events", "A")],
            "percentunit",
            "Share of the consumed events dated more than 7 days before their fold (the"
            " old-events alert's figure).",
            min_val=0,
        ),
        dashboard.Row("Activity depth and lifecycle").id(400),
        _ts(
            "Days active in the last 7 days",
            [_q(_max("days_active_users", '{window="7d"}'), "{{days}} days", "A")],
            "short",
            "Users active on exactly k of the 7 days ending today (from the user scan).",
            stacked=True,
            min_val=0,
        ),
        _bargauge(
            "Days active in the last 30 days",
            _max("days_active_users", '{window="30d"}'),
            "{{days}}",
            "short",
            "Users active on exactly k of the 30 days ending today.",
            width=12,
        ),
        _ts(
            "Lifecycle",
            [_q(_max("lifecycle_users"), "{{state}}", "A")],
            "short",
            "Active users today by state (new, returning, resurrecting) and users who"
            " turned dormant today.",
            width=18,
            min_val=0,
        ),
        _stat(
            "Age of the user scan",
            "time() - " + _max("days_active_computed_timestamp_seconds"),
            "s",
            "Seconds since the scan behind the days-active and lifecycle figures.",
            width=6,
            thresholds=_thresholds((None, "green"), (900, "orange")),
        ),
        dashboard.Row("Segments").id(500),
        _by_segment(
            "segment_monthly_active_users",
            "Monthly active users by segment",
            "Distinct active users over 30 days per value of each STREAM_SEGMENTS key.",
            width=12,
        ),
        _by_segment(
            "segment_customers",
            "Customers by segment",
            "Customers whose latest signup is of the segment.",
            width=12,
        ),
        _by_segment(
            "segment_daily_active_users",
            "Daily active users by segment",
            "Distinct users active today per segment value.",
        ),
        _by_segment(
            "segment_stickiness_ratio",
            "Stickiness by segment",
            "Segment daily / monthly active users.",
        ),
        _by_segment(
            "segment_churn_ratio",
            "Churn by segment",
            "Rolling 30-day churn of the customers of each segment.",
        ),
        _by_segment(
            "segment_cohort_retention_ratio",
            "D1 retention by segment",
            "Day-1 retention of the signup cohort by the segment of the signup that put"
            " each user in it.",
            selector='{day="1"}',
            max_val=1,
        ),
        _by_segment(
            "segment_conversion_ratio",
            "Conversion by segment",
            "Conversions / visits of each segment (all campaigns) over 30 days.",
        ),
        _ts(
            "NPS and CSAT by segment",
            [
                _q(_max("segment_nps_score"), "NPS {{dimension}}={{value}}", "A"),
                _q("100 * " + _max("segment_csat_ratio"), "CSAT % {{dimension}}={{value}}", "B"),
            ],
            "none",
            "NPS (-100..100) and the CSAT share of 4-5 answers (in %) of each segment's"
            " answers over 30 days.",
            width=8,
        ),
        dashboard.Row("Pipeline health").id(200),
        _stat(
            "Workers up",
            'sum(up{job="engagement-stream"})',
            "short",
            "Worker metrics endpoints Prometheus can scrape.",
            thresholds=_thresholds((None, "red"), (1, "green")),
        ),
        _stat(
            "Workers ready",
            "job:engagement_worker_ready:sum",
            "short",
            "Workers with Redis reachable and partitions assigned.",
            thresholds=_thresholds((None, "red"), (1, "green")),
        ),
        _stat(
            "Events/s",
            "job:engagement_events:rate5m",
            "ops",
            "Valid events consumed per second (5-minute rate).",
        ),
        _stat(
            "Dead-letter share",
            "job:engagement_dead_letter:ratio_rate5m",
            "percentunit",
            "Dead-lettered share of all consumed messages (5-minute rate).",
            thresholds=_thresholds((None, "green"), (0.01, "red")),
            decimals=2,
        ),
        _stat(
            "Redis errors/s",
            "job:engagement_redis_errors:rate5m",
            "ops",
            "Errors the workers got from Redis.",
            thresholds=_thresholds((None, "green"), (0.0001, "red")),
        ),
        _stat(
            "Seconds since last event",
            "time() - job:engagement_last_event_timestamp_seconds:max",
            "s",
            "Time since any worker last folded an event.",
            thresholds=_thresholds((None, "green"), (600, "red")),
        ),
        _ts(
            "Events/s by type",
            [_q("job_type:engagement_events:rate5m", "{{type}}", "A")],
            "ops",
            "Valid events consumed per second, by event type.",
            stacked=True,
            min_val=0,
        ),
        _ts(
            "Consumer lag by topic",
            [_q("job_topic:engagement_consumer_lag:sum", "{{topic}}", "A")],
            "short",
            "Messages behind the fetch highwater, summed over the topic's partitions.",
            min_val=0,
        ),
        _ts(
            "Dead letters/s by reason",
            [_q("job_reason:engagement_dead_letter:rate5m", "{{reason}}", "A")],
            "ops",
            "Messages sent to the dead-letter topic per second, by reason.",
            stacked=True,
            min_val=0,
        ),
        _ts(
            "Ignored messages/s by reason",
            [
                _q(
                    "max by (reason) "
                    "(rate(engagement_ignored_total[$__rate_interval]))",
                    "{{reason}}",
                    "A",
                )
            ],
            "ops",
            "Messages of a mapped format that became no event (no rule matched under "
            "`otherwise: ignore`); a total over all workers, so the max of them.",
            stacked=True,
            min_val=0,
        ),
        _ts(
            "Users erased by forget",
            [_q("max(engagement_users_forgotten_total)", "users", "A")],
            "short",
            "Users erased from the store with `forget` (all time, all workers).",
            min_val=0,
        ),
        _ts(
            "Batch apply latency",
            [
                _q("job:engagement_batch_apply_seconds:p50_rate5m", "p50", "A"),
                _q("job:engagement_batch_apply_seconds:p95_rate5m", "p95", "B"),
                _q("job:engagement_batch_apply_seconds:p99_rate5m", "p99", "C"),
            ],
            "s",
            "Time to apply one batch of events to Redis.",
            min_val=0,
        ),
        _ts(
            "Messages processed/s per worker",
            [
                _q(
                    "sum by (instance, topic) "
                    "(rate(engagement_messages_processed_total[$__rate_interval]))",
                    "{{instance}} {{topic}}",
                    "A",
                )
            ],
            "ops",
            "Messages each worker took from Kafka, by topic.",
            stacked=True,
            min_val=0,
        ),
        _ts(
            "Seconds since last event per worker",
            [_q("engagement_seconds_since_last_event", "{{instance}}", "A")],
            "s",
            "Time since each worker last folded an event.",
            min_val=0,
        ),
        _ts(
            "Consumer lag by partition",
            [
                _q(
                    "max by (topic, partition) (engagement_consumer_lag)",
                    "{{topic}}/{{partition}}",
                    "A",
                )
            ],
            "short",
            "Messages behind the fetch highwater of each partition.",
            min_val=0,
        ),
        _ts(
            "Worker versions",
            [_q("count by (version) (engagement_build_info)", "{{version}}", "A")],
            "short",
            "Workers running each version (useful during rolling upgrades).",
            stacked=True,
            min_val=0,
        ),
    ]
    d = (
        dashboard.Dashboard("engagement-stream")
        .uid(UID)
        .description("Customer engagement figures and pipeline health of engagement-stream.")
        .tags(["engagement-stream"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-7d", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .hide(VariableHide.DONT_HIDE)
        )
    )
    items += _unshown_figures()
    for item in items:
        d = d.with_row(item) if isinstance(item, dashboard.Row) else d.with_panel(item)
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the engagement-stream dashboard.")
    parser.add_argument("--check", action="store_true", help="fail if the JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"out of date (run deploy/grafana/dashboard.py): {OUTPUT.relative_to(ROOT)}")
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

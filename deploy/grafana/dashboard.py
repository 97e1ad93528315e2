"""Generate the engagement-stream Grafana dashboard with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py          # writes dashboards/engagement-stream.json
    python deploy/grafana/dashboard.py --check  # fails if the committed JSON is out of date

Figures come from the recording rules of deploy/prometheus/rules (job-level series, one per
deployment); per-worker pipeline health is queried from the raw metrics.
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


def build() -> dict[str, object]:
    _ids.n = 0
    good_high = _thresholds((None, "red"), (0.5, "orange"), (0.8, "green"))
    churn_thr = _thresholds((None, "green"), (0.05, "red"))
    nps_thr = _thresholds((None, "red"), (0, "orange"), (30, "green"))
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
        .with_row(dashboard.Row("Overview").id(100))
        # --- headline figures
        .with_panel(
            _stat(
                "Daily active users",
                "job:engagement_daily_active_users:max",
                "short",
                "Distinct users with activity today.",
            )
        )
        .with_panel(
            _stat(
                "Weekly active users",
                "job:engagement_weekly_active_users:max",
                "short",
                "Distinct active users over the rolling 7 days.",
            )
        )
        .with_panel(
            _stat(
                "Monthly active users",
                "job:engagement_monthly_active_users:max",
                "short",
                "Distinct active users over the rolling 30 days.",
            )
        )
        .with_panel(
            _stat(
                "Stickiness (DAU/MAU)",
                "job:engagement_stickiness_ratio:max",
                "percentunit",
                "Today's active users over the rolling 30 days' active users. Today is"
                " partial, so it rises through the day.",
                decimals=1,
            )
        )
        .with_panel(
            _stat(
                "Yesterday's stickiness",
                "job:engagement_previous_day_stickiness_ratio:max",
                "percentunit",
                "Stickiness of the last complete day, the figure the stickiness alert uses.",
                decimals=1,
            )
        )
        .with_panel(
            _stat(
                "Customers",
                "job:engagement_customers:max",
                "short",
                "Users whose latest signup/cancellation is a signup.",
            )
        )
        .with_panel(
            _stat(
                "Churn (30 days)",
                "job:engagement_churn_ratio:max",
                "percentunit",
                "Share of the customers at the start of the rolling 30 days who cancelled.",
                thresholds=churn_thr,
                decimals=2,
            )
        )
        .with_panel(
            _stat(
                "Retention (30 days)",
                "job:engagement_retention_ratio:max",
                "percentunit",
                "1 - churn.",
                decimals=2,
            )
        )
        .with_panel(
            _stat(
                "NPS (30 days)",
                "job:engagement_nps_score:max",
                "none",
                "100 x (promoters - detractors) / answers over the rolling 30 days.",
                thresholds=nps_thr,
                decimals=0,
            )
        )
        .with_panel(
            _stat(
                "CSAT (30 days)",
                "job:engagement_csat_ratio:max",
                "percentunit",
                "Share of CSAT answers that are 4 or 5 over the rolling 30 days.",
                thresholds=good_high,
                decimals=1,
            )
        )
        .with_panel(
            _stat(
                "First-week participation",
                "job:engagement_first_week_active_ratio:max",
                "percentunit",
                "Of the customers who signed up 8 to 37 days ago, the share active on days"
                " 1-7 after their signup day.",
                decimals=1,
            )
        )
        .with_panel(
            _stat(
                "Calendar-month active users",
                "job:engagement_calendar_month_active_users:max",
                "short",
                "Distinct active users in the current calendar month.",
            )
        )
        # --- trends
        .with_panel(
            _ts(
                "Active users",
                [
                    _q("job:engagement_daily_active_users:max", "DAU", "A"),
                    _q("job:engagement_weekly_active_users:max", "WAU", "B"),
                    _q("job:engagement_monthly_active_users:max", "MAU", "C"),
                ],
                "short",
                "Distinct active users today, over 7 and over 30 days.",
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Stickiness trend",
                [
                    _q("job:engagement_stickiness_ratio:max", "today (partial day)", "A"),
                    _q("job:engagement_previous_day_stickiness_ratio:max", "yesterday", "B"),
                    _q(
                        "job:engagement_previous_day_stickiness_ratio:avg_over_time7d",
                        "yesterday, 7-day average",
                        "C",
                    ),
                ],
                "percentunit",
                "DAU/MAU; the alert compares yesterday's stickiness with its 7-day average.",
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Churn and retention",
                [
                    _q("job:engagement_churn_ratio:max", "churn", "A"),
                    _q("job:engagement_retention_ratio:max", "retention", "B"),
                ],
                "percentunit",
                "Rolling 30-day churn and retention of customers.",
                min_val=0,
                max_val=1,
            )
        )
        .with_panel(
            _ts(
                "NPS",
                [
                    _q("job:engagement_nps_score:max", "NPS", "A"),
                    _q("job:engagement_nps_score:avg_over_time7d", "7-day average", "B"),
                ],
                "none",
                "Net Promoter Score over the rolling 30 days (-100 to 100).",
                width=6,
            )
        )
        .with_panel(
            _ts(
                "CSAT",
                [_q("job:engagement_csat_ratio:max", "CSAT", "A")],
                "percentunit",
                "Share of satisfied (4-5) CSAT answers over the rolling 30 days.",
                width=6,
                min_val=0,
                max_val=1,
            )
        )
        .with_panel(
            bargauge.Panel()
            .id(_ids.next())
            .title("Conversion by campaign (30 days)")
            .description("Conversions / visits of each campaign over the rolling 30 days: "
                         "the STREAM_CAMPAIGN_MAX_SERIES campaigns with the most visits; "
                         "`other` sums the rest.")
            .datasource(DS)
            .with_target(
                _q("job_campaign:engagement_conversion_ratio:max", "{{campaign}}", instant=True)
            )
            .unit("percentunit")
            .decimals(2)
            .min(0)
            .height(8)
            .span(12)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .thresholds(_thresholds((None, "blue")))
        )
        .with_panel(
            _ts(
                "Conversion by campaign",
                [
                    _q("job_campaign:engagement_conversion_ratio:max", "{{campaign}}", "A"),
                ],
                "percentunit",
                "Rolling 30-day conversion ratio per campaign; the alert compares it with its"
                " 7-day average.",
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "First-week participation",
                [_q("job:engagement_first_week_active_ratio:max", "first week", "A")],
                "percentunit",
                "Share of recent signups active in their first week.",
                min_val=0,
                max_val=1,
            )
        )
        .with_panel(
            _ts(
                "Customers",
                [_q("job:engagement_customers:max", "customers", "A")],
                "short",
                "Current customers.",
                min_val=0,
            )
        )
        .with_row(dashboard.Row("Retention cohorts and late data").id(300))
        .with_panel(
            _ts(
                "Day-N retention of signup cohorts",
                [
                    _q("job_day:engagement_cohort_retention_ratio:max", "D{{day}}", "A"),
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
            )
        )
        .with_panel(
            bargauge.Panel()
            .id(_ids.next())
            .title("Retention curve")
            .description("The latest day-N retention of each signup cohort, N = 1, 7, 14, 30.")
            .datasource(DS)
            .with_target(
                _q("job_day:engagement_cohort_retention_ratio:max", "D{{day}}", instant=True)
            )
            .unit("percentunit")
            .decimals(1)
            .min(0)
            .max(1)
            .height(8)
            .span(6)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .thresholds(_thresholds((None, "blue")))
        )
        .with_panel(
            _ts(
                "Signup cohort sizes",
                [_q("job_day:engagement_cohort_users:max", "D{{day}} cohort", "A")],
                "short",
                "Users in each day-N cohort (signups of 7 days, each user once).",
                width=6,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Late events/s by age",
                [_q("job_age:engagement_late_events:rate5m", "{{age}}", "A")],
                "ops",
                "Valid events dated before the day they were folded, by days late: which past"
                " days are still moving.",
                stacked=True,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Events older than a week",
                [_q("job:engagement_old_events:ratio_rate5m", "share of events", "A")],
                "percentunit",
                "Share of the consumed events dated more than 7 days before their fold (the"
                " old-events alert's figure).",
                min_val=0,
            )
        )
        .with_row(dashboard.Row("Activity depth and lifecycle").id(400))
        .with_panel(
            _ts(
                "Days active in the last 7 days",
                [
                    _q(
                        'job_window_days:engagement_days_active_users:max{window="7d"}',
                        "{{days}} days",
                        "A",
                    )
                ],
                "short",
                "Users active on exactly k of the 7 days ending today (from the user scan).",
                stacked=True,
                min_val=0,
            )
        )
        .with_panel(
            bargauge.Panel()
            .id(_ids.next())
            .title("Days active in the last 30 days")
            .description("Users active on exactly k of the 30 days ending today.")
            .datasource(DS)
            .with_target(
                _q(
                    'job_window_days:engagement_days_active_users:max{window="30d"}',
                    "{{days}}",
                    instant=True,
                )
            )
            .unit("short")
            .min(0)
            .height(8)
            .span(12)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .thresholds(_thresholds((None, "blue")))
        )
        .with_panel(
            _ts(
                "Lifecycle",
                [_q("job_state:engagement_lifecycle_users:max", "{{state}}", "A")],
                "short",
                "Active users today by state (new, returning, resurrecting) and users who"
                " turned dormant today.",
                width=18,
                min_val=0,
            )
        )
        .with_panel(
            _stat(
                "Age of the user scan",
                "time() - job:engagement_days_active_computed_timestamp_seconds:max",
                "s",
                "Seconds since the scan behind the days-active and lifecycle figures.",
                width=6,
                thresholds=_thresholds((None, "green"), (900, "orange")),
            )
        )
        .with_row(dashboard.Row("Segments").id(500))
        .with_panel(
            _ts(
                "Monthly active users by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_monthly_active_users:max",
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "short",
                "Distinct active users over 30 days per value of each STREAM_SEGMENTS key.",
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Customers by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_customers:max",
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "short",
                "Customers whose latest signup is of the segment.",
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Daily active users by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_daily_active_users:max",
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "short",
                "Distinct users active today per segment value.",
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Stickiness by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_stickiness_ratio:max",
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "percentunit",
                "Segment daily / monthly active users.",
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Churn by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_churn_ratio:max",
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "percentunit",
                "Rolling 30-day churn of the customers of each segment.",
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "D1 retention by segment",
                [
                    _q(
                        "job_dimension_value_day:engagement_segment_cohort_retention_ratio:max"
                        '{day="1"}',
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "percentunit",
                "Day-1 retention of the signup cohort by the segment of the signup that put"
                " each user in it.",
                width=8,
                min_val=0,
                max_val=1,
            )
        )
        .with_panel(
            _ts(
                "Conversion by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_conversion_ratio:max",
                        "{{dimension}}={{value}}",
                        "A",
                    )
                ],
                "percentunit",
                "Conversions / visits of each segment (all campaigns) over 30 days.",
                width=8,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "NPS and CSAT by segment",
                [
                    _q(
                        "job_dimension_value:engagement_segment_nps_score:max",
                        "NPS {{dimension}}={{value}}",
                        "A",
                    ),
                    _q(
                        "100 * job_dimension_value:engagement_segment_csat_ratio:max",
                        "CSAT % {{dimension}}={{value}}",
                        "B",
                    ),
                ],
                "none",
                "NPS (-100..100) and the CSAT share of 4-5 answers (in %) of each segment's"
                " answers over 30 days.",
                width=8,
            )
        )
        .with_row(dashboard.Row("Pipeline health").id(200))
        .with_panel(
            _stat(
                "Workers up",
                'sum(up{job="engagement-stream"})',
                "short",
                "Worker metrics endpoints Prometheus can scrape.",
                thresholds=_thresholds((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            _stat(
                "Workers ready",
                "job:engagement_worker_ready:sum",
                "short",
                "Workers with Redis reachable and partitions assigned.",
                thresholds=_thresholds((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            _stat(
                "Events/s",
                "job:engagement_events:rate5m",
                "ops",
                "Valid events consumed per second (5-minute rate).",
            )
        )
        .with_panel(
            _stat(
                "Dead-letter share",
                "job:engagement_dead_letter:ratio_rate5m",
                "percentunit",
                "Dead-lettered share of all consumed messages (5-minute rate).",
                thresholds=_thresholds((None, "green"), (0.01, "red")),
                decimals=2,
            )
        )
        .with_panel(
            _stat(
                "Redis errors/s",
                "job:engagement_redis_errors:rate5m",
                "ops",
                "Errors the workers got from Redis.",
                thresholds=_thresholds((None, "green"), (0.0001, "red")),
            )
        )
        .with_panel(
            _stat(
                "Seconds since last event",
                "time() - job:engagement_last_event_timestamp_seconds:max",
                "s",
                "Time since any worker last folded an event.",
                thresholds=_thresholds((None, "green"), (600, "red")),
            )
        )
        .with_panel(
            _ts(
                "Events/s by type",
                [_q("job_type:engagement_events:rate5m", "{{type}}", "A")],
                "ops",
                "Valid events consumed per second, by event type.",
                stacked=True,
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Consumer lag by topic",
                [_q("job_topic:engagement_consumer_lag:sum", "{{topic}}", "A")],
                "short",
                "Messages behind the fetch highwater, summed over the topic's partitions.",
                min_val=0,
            )
        )
        .with_panel(
            _ts(
                "Dead letters/s by reason",
                [_q("job_reason:engagement_dead_letter:rate5m", "{{reason}}", "A")],
                "ops",
                "Messages sent to the dead-letter topic per second, by reason.",
                stacked=True,
                min_val=0,
            )
        )
        .with_panel(
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
            )
        )
        .with_panel(
            _ts(
                "Users erased by forget",
                [_q("max(engagement_users_forgotten_total)", "users", "A")],
                "short",
                "Users erased from the store with `forget` (all time, all workers).",
                min_val=0,
            )
        )
        .with_panel(
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
            )
        )
        .with_panel(
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
            )
        )
        .with_panel(
            _ts(
                "Seconds since last event per worker",
                [_q("engagement_seconds_since_last_event", "{{instance}}", "A")],
                "s",
                "Time since each worker last folded an event.",
                min_val=0,
            )
        )
        .with_panel(
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
            )
        )
        .with_panel(
            _ts(
                "Worker versions",
                [_q("count by (version) (engagement_build_info)", "{{version}}", "A")],
                "short",
                "Workers running each version (useful during rolling upgrades).",
                stacked=True,
                min_val=0,
            )
        )
    )
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

"""The figure catalogue against the contract (the README's figure tables), written out by
hand here: every exported family is in the catalogue with its labels and type, and every
catalogue entry is exported; the sets derived from it are the contract's."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream import catalogue
from stream.catalogue import CATALOGUE
from stream.metrics.collector import FiguresCollector

SEG = ("dimension", "value")
#: Every figure family of the contract: name -> (type, labels), by hand.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "engagement_daily_active_users": ("gauge", ()),
    "engagement_weekly_active_users": ("gauge", ()),
    "engagement_monthly_active_users": ("gauge", ()),
    "engagement_calendar_month_active_users": ("gauge", ()),
    "engagement_stickiness_ratio": ("gauge", ()),
    "engagement_previous_day_stickiness_ratio": ("gauge", ()),
    "engagement_customers": ("gauge", ()),
    "engagement_churn_ratio": ("gauge", ()),
    "engagement_retention_ratio": ("gauge", ()),
    "engagement_conversion_ratio": ("gauge", ("campaign",)),
    "engagement_nps_score": ("gauge", ()),
    "engagement_csat_ratio": ("gauge", ()),
    "engagement_first_week_active_ratio": ("gauge", ()),
    "engagement_events": ("counter", ("type",)),
    "engagement_dead_letter": ("counter", ("reason",)),
    "engagement_ignored": ("counter", ("reason",)),
    "engagement_users_forgotten": ("counter", ()),
    "engagement_late_events": ("counter", ("age",)),
    "engagement_previous_day_daily_active_users": ("gauge", ()),
    "engagement_previous_day_weekly_active_users": ("gauge", ()),
    "engagement_previous_day_monthly_active_users": ("gauge", ()),
    "engagement_previous_day_calendar_month_active_users": ("gauge", ()),
    "engagement_previous_day_customers": ("gauge", ()),
    "engagement_previous_day_churn_ratio": ("gauge", ()),
    "engagement_previous_day_retention_ratio": ("gauge", ()),
    "engagement_previous_day_conversion_ratio": ("gauge", ("campaign",)),
    "engagement_previous_day_nps_score": ("gauge", ()),
    "engagement_previous_day_csat_ratio": ("gauge", ()),
    "engagement_previous_day_first_week_active_ratio": ("gauge", ()),
    "engagement_segment_daily_active_users": ("gauge", SEG),
    "engagement_segment_weekly_active_users": ("gauge", SEG),
    "engagement_segment_monthly_active_users": ("gauge", SEG),
    "engagement_segment_stickiness_ratio": ("gauge", SEG),
    "engagement_segment_customers": ("gauge", SEG),
    "engagement_segment_churn_ratio": ("gauge", SEG),
    "engagement_segment_retention_ratio": ("gauge", SEG),
    "engagement_segment_conversion_ratio": ("gauge", SEG),
    "engagement_segment_nps_score": ("gauge", SEG),
    "engagement_segment_csat_ratio": ("gauge", SEG),
    "engagement_days_active_users": ("gauge", ("window", "days")),
    "engagement_lifecycle_users": ("gauge", ("state",)),
    "engagement_previous_day_days_active_users": ("gauge", ("window", "days")),
    "engagement_previous_day_lifecycle_users": ("gauge", ("state",)),
    "engagement_days_active_computed_timestamp_seconds": ("gauge", ()),
    "engagement_cohort_retention_ratio": ("gauge", ("day",)),
    "engagement_cohort_users": ("gauge", ("day",)),
    "engagement_previous_day_cohort_retention_ratio": ("gauge", ("day",)),
    "engagement_previous_day_cohort_users": ("gauge", ("day",)),
    "engagement_segment_cohort_retention_ratio": ("gauge", (*SEG, "day")),
    "engagement_segment_cohort_users": ("gauge", (*SEG, "day")),
}


def _one_sample(labels: tuple[str, ...]) -> Any:
    """A value nested one dict per label, with one sample."""
    value: Any = 1
    for label in reversed(labels):
        value = {f"some-{label}": value}
    return value


def _scrape(figs: dict[str, Any]) -> str:
    registry = CollectorRegistry()
    registry.register(FiguresCollector(lambda: figs, cache_seconds=0))
    return generate_latest(registry).decode()


def test_every_contract_family_is_exported_with_its_type_and_labels() -> None:
    """A scrape of figures where every figure has one sample lists exactly the contract's
    families, each with its type and label names."""
    # The figures as compute gives them: keyed by the figure name (counters with `_total`).
    figs = {name.removeprefix("engagement_") + ("_total" if kind == "counter" else ""):
            _one_sample(labels) for name, (kind, labels) in CONTRACT.items()}
    got: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(_scrape(figs)):
        (sample,) = family.samples
        got[family.name] = (family.type, tuple(sorted(sample.labels)))
    assert got == {name: (kind, tuple(sorted(labels)))
                   for name, (kind, labels) in CONTRACT.items()}


def test_the_catalogue_is_the_contract() -> None:
    """Each entry is a contract family (and the other way round), with its labels in
    the nesting order of its value."""
    assert len(CATALOGUE) == len(CONTRACT)
    for figure in CATALOGUE:
        family = figure.metric.removesuffix("_total") if figure.counter else figure.metric
        kind, labels = CONTRACT[family]
        assert (kind == "counter") == figure.counter, figure.name
        assert figure.labels == labels, figure.name


def test_help_texts_and_variants() -> None:
    names = [f.name for f in CATALOGUE]
    assert len(set(names)) == len(names)
    for figure in CATALOGUE:
        assert figure.help.strip() and figure.help.endswith("."), figure.name
        assert "\n" not in figure.help, figure.name
        if figure.variant:
            assert figure.of in names, figure.name
            prefix = {"previous_day": "previous_day_", "segment": "segment_"}[figure.variant]
            assert figure.name == prefix + figure.of, figure.name
        else:
            assert not figure.of, figure.name
        if figure.counter:
            assert figure.name.endswith("_total"), figure.name


def test_derived_sets() -> None:
    """The sets `figures.compute` and `as_of_day` work from, as the contract has them."""
    assert catalogue.PREVIOUS_DAY_FIGURES == (
        "daily_active_users", "weekly_active_users", "monthly_active_users",
        "calendar_month_active_users", "customers", "churn_ratio", "retention_ratio",
        "conversion_ratio", "nps_score", "csat_ratio", "first_week_active_ratio",
        "cohort_retention_ratio", "cohort_users")
    assert set(catalogue.TOTALS) == {"events_total", "dead_letter_total", "late_events_total",
                                     "users_forgotten_total", "ignored_total"}
    assert catalogue.SCAN_FIGURES == (
        "days_active_users", "lifecycle_users", "previous_day_days_active_users",
        "previous_day_lifecycle_users", "days_active_computed_timestamp_seconds")
    assert catalogue.SEGMENT_FIGURES == (
        "segment_daily_active_users", "segment_weekly_active_users",
        "segment_monthly_active_users", "segment_stickiness_ratio", "segment_customers",
        "segment_churn_ratio", "segment_retention_ratio", "segment_conversion_ratio",
        "segment_nps_score", "segment_csat_ratio")
    assert catalogue.SEGMENT_COHORT_FIGURES == (
        "segment_cohort_retention_ratio", "segment_cohort_users")


def test_variants() -> None:
    assert set(catalogue.variants("nps_score")) == {"previous_day", "segment"}
    assert catalogue.variants("nps_score")["segment"].name == "segment_nps_score"
    assert set(catalogue.variants("calendar_month_active_users")) == {"previous_day"}
    assert set(catalogue.variants("cohort_users")) == {"previous_day", "segment"}
    assert catalogue.variants("events_total") == {}


def test_recorded_series_names() -> None:
    """The recording rules' series: `job`, then each label, then the metric."""
    by = catalogue.BY_NAME
    assert by["daily_active_users"].max_series == "job:engagement_daily_active_users:max"
    assert (by["conversion_ratio"].max_series
            == "job_campaign:engagement_conversion_ratio:max")
    assert (by["segment_cohort_retention_ratio"].max_series
            == "job_dimension_value_day:engagement_segment_cohort_retention_ratio:max")

"""Figures from raw numbers: ratios, windows, difference arrays, omitted denominators."""

from __future__ import annotations

from stream.catalogue import BY_NAME, PREVIOUS_DAY_FIGURES
from stream.figures import RawFigures, as_of_day, compute

T = 20_000


def test_empty_store_has_no_ratios() -> None:
    f = compute(RawFigures(today=T))
    assert f["daily_active_users"] == 0 and f["customers"] == 0
    for name in ("stickiness_ratio", "churn_ratio", "retention_ratio", "nps_score",
                 "csat_ratio", "first_week_active_ratio", "previous_day_stickiness_ratio"):
        assert name not in f
    assert f["conversion_ratio"] == {}
    assert f["events_total"]["activity"] == 0
    assert set(f["dead_letter_total"]) == {"invalid_json", "invalid_event", "late", "future"}


def test_ratios_and_scores() -> None:
    raw = RawFigures(today=T, dau=25, mau=100, prev_dau=10, prev_mau=40)
    # 3 promoters (9, 10, 10), 2 passives, 5 detractors -> 100 * (3 - 5) / 10 = -20
    raw.window_counters = {"nps:9": 1, "nps:10": 2, "nps:7": 1, "nps:8": 1, "nps:0": 2,
                           "nps:6": 3, "csat:5": 3, "csat:4": 1, "csat:1": 4,
                           "v:spring": 200, "c:spring": 6, "c:orphan": 3}
    f = compute(raw)
    assert f["stickiness_ratio"] == 0.25
    assert f["previous_day_stickiness_ratio"] == 0.25
    assert f["nps_score"] == -20.0
    assert f["csat_ratio"] == 0.5
    assert f["conversion_ratio"] == {"spring": 0.03}  # no visits for "orphan": not exported


def test_difference_arrays() -> None:
    start = T - 29
    raw = RawFigures(today=T)
    # 5 customers from day start-10, 1 of them leaves at start+3 (D drops at start+4),
    # 2 join at start+1: customers at the window start = 5, now = 6.
    raw.diffs = {f"D:{start - 10}": 5, f"D:{start + 4}": -1, f"D:{start + 1}": 2,
                 f"N:{start - 10}": 1, f"N:{start + 4}": -1}
    raw.first_week = (4, 2)
    f = compute(raw)
    assert f["customers"] == 6
    assert f["churn_ratio"] == 0.2
    assert abs(f["retention_ratio"] - 0.8) < 1e-12
    assert f["first_week_active_ratio"] == 0.5


def test_customers_as_of_the_end_of_the_day() -> None:
    # D:<x> is customers at 00:00 of day x: a signup on day T counts at T + 1.
    raw = RawFigures(today=T, diffs={f"D:{T - 5}": 3, f"D:{T + 1}": 2, f"D:{T + 2}": 4})
    assert compute(raw)["customers"] == 5
    raw.today = T - 6
    assert compute(raw)["customers"] == 3  # the end of T - 6 is 00:00 of T - 5


def test_previous_day_family() -> None:
    diffs = {f"D:{T - 40}": 10, f"N:{T - 40}": 2, f"D:{T + 1}": 1}
    previous = RawFigures(today=T - 1, dau=5, wau=9, mau=20, calendar_mau=12, diffs=diffs,
                          window_counters={"v:a": 10, "c:a": 1, "nps:10": 1})
    raw = RawFigures(today=T, dau=6, mau=21, prev_dau=5, prev_mau=20, diffs=diffs,
                     window_counters={"v:a": 10, "c:a": 2}, previous=previous)
    f = compute(raw)
    assert f["customers"] == 11 and f["previous_day_customers"] == 10
    assert f["previous_day_daily_active_users"] == 5
    assert f["previous_day_weekly_active_users"] == 9
    assert f["previous_day_calendar_month_active_users"] == 12
    assert f["previous_day_stickiness_ratio"] == 0.25
    assert f["conversion_ratio"] == {"a": 0.2}
    assert f["previous_day_conversion_ratio"] == {"a": 0.1}
    assert f["previous_day_nps_score"] == 100.0 and "nps_score" not in f
    assert "previous_day_csat_ratio" not in f  # no answers: not exported
    assert "previous_day_events_total" not in f
    assert as_of_day(f).keys() == f.keys() - {"events_total", "dead_letter_total",
                                              "late_events_total", "users_forgotten_total",
                                              "ignored_total"}
    # without the day before, the family is absent (the stickiness one aside)
    raw.previous = None
    assert not [k for k in compute(raw) if k.startswith("previous_day_")
                and k != "previous_day_stickiness_ratio"]


def test_every_previous_day_figure_is_exported() -> None:
    for name in PREVIOUS_DAY_FIGURES:
        assert "previous_day_" + name in BY_NAME


def test_cohort_and_late_figures() -> None:
    """Cohorts of no user are not exported; ratios are retained / cohort; the previous
    day's come from its own numbers; late events list every age bucket."""
    previous = RawFigures(today=T - 1, cohorts={"c:1": 4, "r:1": 1, "c:7": 0, "r:7": 0})
    raw = RawFigures(today=T, cohorts={"c:1": 5, "r:1": 2, "c:7": 0, "r:7": 0, "c:30": 3,
                                       "r:30": 3},
                     totals={"late:1d": 7, "late:31d+": 1, "e:activity": 9},
                     previous=previous)
    f = compute(raw)
    assert f["cohort_users"] == {"1": 5, "30": 3}
    assert f["cohort_retention_ratio"] == {"1": 0.4, "30": 1.0}
    assert f["previous_day_cohort_users"] == {"1": 4}
    assert f["previous_day_cohort_retention_ratio"] == {"1": 0.25}
    assert f["late_events_total"] == {"1d": 7, "2-7d": 0, "8-30d": 0, "31d+": 1}
    assert "late_events_total" not in as_of_day(f)

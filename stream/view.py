"""Terminal rendering of the figures (rich), shared by `report` and the demo's live view."""

from __future__ import annotations

from typing import Any

from rich.table import Table

_LABELS = {
    "daily_active_users": "Daily active users",
    "weekly_active_users": "Weekly active users",
    "monthly_active_users": "Monthly active users (30 d)",
    "calendar_month_active_users": "Active users this month",
    "stickiness_ratio": "Stickiness (DAU/MAU)",
    "previous_day_stickiness_ratio": "Stickiness yesterday",
    "customers": "Customers",
    "churn_ratio": "Churn (30 d)",
    "retention_ratio": "Retention (30 d)",
    "nps_score": "NPS (30 d)",
    "csat_ratio": "CSAT 4-5 share (30 d)",
    "first_week_active_ratio": "First-week participation",
}
_PERCENT = {"stickiness_ratio", "previous_day_stickiness_ratio", "churn_ratio",
            "retention_ratio", "csat_ratio", "first_week_active_ratio"}


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in _PERCENT:
        return f"{100 * value:.1f} %"
    if name == "nps_score":
        return f"{value:+.1f}"
    return f"{value:,}"


def figures_table(figs: dict[str, Any], title: str = "engagement") -> Table:
    """One table: headline figures, conversion per campaign, event and dead-letter totals."""
    table = Table(title=title, show_header=False, expand=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    for name, label in _LABELS.items():
        table.add_row(label, _fmt(name, figs.get(name)))
    for campaign, ratio in figs.get("conversion_ratio", {}).items():
        table.add_row(f"Conversion {campaign}", f"{100 * ratio:.2f} %")
    if "events_total" in figs:  # all-time totals: not in the figures of a past day
        events = figs["events_total"]
        table.add_row("Events", " ".join(f"{k}={v:,}" for k, v in events.items() if v))
        dead = figs.get("dead_letter_total", {})
        table.add_row("Dead letters",
                      " ".join(f"{k}={v:,}" for k, v in dead.items() if v) or "0")
    return table

"""Terminal rendering of the figures (rich): the table of `report`, and the demo's live
view (trends, change against yesterday, pipeline, addresses)."""

from __future__ import annotations

import urllib.parse
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .catalogue import CATALOGUE, PREFIX

#: Rows of `report`'s table: the figures with a title, in catalogue order.
_TITLES = {f.name: f.title for f in CATALOGUE if f.title}
_PERCENT = {f.name for f in CATALOGUE if f.title and f.unit == "ratio"}
_SCORE = {f.name for f in CATALOGUE if f.title and f.unit == "score"}


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in _PERCENT:
        return f"{100 * value:.1f} %"
    if name in _SCORE:
        return f"{value:+.1f}"
    return f"{value:,}"


def figures_table(figs: dict[str, Any], title: str = "engagement") -> Table:
    """One table: headline figures, conversion per campaign, event and dead-letter totals."""
    table = Table(title=title, show_header=False, expand=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    for name, label in _TITLES.items():
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


# ------------------------------------------------------------------------- live view

_LIVE = sorted(((f.live, f) for f in CATALOGUE if f.live is not None),
               key=lambda pair: pair[0].row)
#: Figures of the live view: (name, label, kind), from the catalogue's `live` rows; each
#: is compared with its `previous_day_<name>`, the same figure as of the end of yesterday.
LIVE_FIGURES: tuple[tuple[str, str, str], ...] = tuple(
    (f.name, live.title, f.unit) for live, f in _LIVE)
#: Figures of the one-line output (not a terminal): (name, kind), in live-view order.
_LINE_FIGURES: tuple[tuple[str, str], ...] = tuple(
    (f.name, f.unit) for live, f in _LIVE if live.in_line)
#: Main figures graphed by the Prometheus link of the live view.
GRAPHED = tuple(PREFIX + f.name for f in CATALOGUE if f.graphed)
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
#: Rows the live view needs besides the conversion rows: the status line, the table
#: header, the figures, three pipeline lines and three address lines, and one spare for
#: the terminal's cursor, so nothing scrolls.
_FIXED_ROWS = 1 + 1 + len(LIVE_FIGURES) + 3 + 3 + 1


def sparkline(values: Sequence[float], width: int) -> str:
    """`values` (oldest first) as at most `width` block characters, scaled from their
    minimum to their maximum (a flat series is a flat low line)."""
    values = list(values)[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return SPARK_BLOCKS[0] * len(values)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - low) / (high - low) * top)] for v in values)


def change(kind: str, now: float | None, before: float | None) -> str:
    """`now` against `before` (yesterday): relative for counts, in percentage points
    for ratios, in points for the NPS score; empty when either is unknown."""
    if now is None or before is None:
        return ""
    if kind == "count":
        if before == 0:
            return ""
        return f"{100 * (now - before) / before:+.1f} %"
    if kind == "ratio":
        return f"{100 * (now - before):+.1f} pt"
    return f"{now - before:+.1f}"


def _value(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{100 * value:.1f} %"
    if kind == "score":
        return f"{value:+.1f}"
    return f"{value:,.0f}"


@dataclass(frozen=True)
class Links:
    """Addresses shown by the live view (None: not running)."""

    metrics: str
    prometheus: str | None = None
    graph_page: str | None = None
    alerts_page: str | None = None

    def graph(self) -> str | None:
        """The Prometheus graph page with the main figures over the last hour."""
        if self.graph_page is None:
            return None
        params: dict[str, str] = {}
        for i, expr in enumerate(GRAPHED):
            params.update({f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": "1h"})
        return f"{self.graph_page}?{urllib.parse.urlencode(params)}"


class Trends:
    """Samples of every figure over the last `window` seconds, for the sparklines."""

    def __init__(self, window: float = 300.0, width: int = 20) -> None:
        self.window = window
        self.width = width
        self._series: dict[str, deque[tuple[float, float]]] = {}

    def add(self, name: str, at: float, value: float | None) -> None:
        if value is None:
            return
        series = self._series.setdefault(name, deque())
        series.append((at, float(value)))
        while series and series[0][0] < at - self.window:
            series.popleft()

    def buckets(self, name: str, now: float) -> list[float]:
        """The series in `width` equal slices of the window ending `now`, or of its span
        while it is younger (the last sample of each slice; slices before the first sample
        are left out)."""
        series = self._series.get(name)
        if not series:
            return []
        # A young series spans less than the window: its slices are as short as its span
        # allows (1 s at least), so a trend shows within seconds of the start.
        span = min(self.window, max(now - series[0][0], float(self.width)))
        step = span / self.width
        out: list[float | None] = [None] * self.width
        for at, sample in series:
            slot = min(self.width - 1, max(0, int((at - (now - span)) / step)))
            out[slot] = sample
        filled: list[float] = []
        last: float | None = None
        for slot_value in out:
            last = slot_value if slot_value is not None else last
            if last is not None:
                filled.append(last)
        return filled

    def spark(self, name: str, now: float) -> str:
        return sparkline(self.buckets(name, now), self.width)


@dataclass
class Pipeline:
    """The pipeline's state for the view: messages per second, lag, folded total."""

    rate: float = 0.0
    lag: int = 0
    folded: float = 0.0


class LiveView:
    """The live view: every figure with its trend over the last minutes (a sparkline)
    and its change against yesterday, conversion per campaign as the terminal's height
    allows, the pipeline's rate, lag and dead letters by reason, and the addresses of
    /metrics and of Prometheus' graph and alerts pages. Sized for 80x24 and up; nothing
    wraps (long cells are cut with an ellipsis).

    Call `sample` with each new reading, then `render` (a terminal) or `plain_line`
    (anything else)."""

    def __init__(self, links: Links, window: float = 300.0) -> None:
        self.links = links
        self.trends = Trends(window)
        self.figs: dict[str, Any] = {}
        self.pipeline = Pipeline()
        self._at = 0.0

    def sample(self, figs: dict[str, Any], pipeline: Pipeline, at: float,
               trend: bool = True) -> None:
        """Record one reading taken at monotonic time `at`; without `trend` it is shown
        but left out of the trends (say, while the worker catches up on a backlog, whose
        jump would flatten the rest of the sparkline)."""
        self.figs, self.pipeline, self._at = figs, pipeline, at
        if not trend:
            return
        for name, _, _ in LIVE_FIGURES:
            self.trends.add(name, at, figs.get(name))
        for campaign, ratio in figs.get("conversion_ratio", {}).items():
            self.trends.add(f"conversion_ratio:{campaign}", at, ratio)
        self.trends.add("rate", at, pipeline.rate)

    def _campaigns(self) -> list[tuple[str, float, float | None]]:
        now = self.figs.get("conversion_ratio", {})
        before = self.figs.get("previous_day_conversion_ratio", {})
        return [(c, now[c], before.get(c)) for c in sorted(now)]

    def render(self, status: str, height: int = 24) -> RenderableType:
        """The view for a terminal `height` rows high (at least 80 columns wide)."""
        figs, at = self.figs, self._at
        table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0),
                      header_style="bold")
        table.add_column("figure", width=25, no_wrap=True, overflow="ellipsis")
        table.add_column("now", width=10, justify="right", no_wrap=True)
        minutes = f"{self.trends.window / 60:.0f}"
        table.add_column(f"last {minutes} min", width=self.trends.width, no_wrap=True)
        table.add_column("vs yesterday", width=12, justify="right", no_wrap=True)
        for name, label, kind in LIVE_FIGURES:
            table.add_row(label, _value(kind, figs.get(name)), self.trends.spark(name, at),
                          change(kind, figs.get(name), figs.get("previous_day_" + name)))
        room = max(0, height - _FIXED_ROWS)
        campaigns = self._campaigns()
        shown = campaigns if len(campaigns) <= room else campaigns[:max(0, room - 1)]
        for campaign, ratio, before in shown:
            table.add_row(f"Conversion {campaign}", f"{100 * ratio:.2f} %",
                          self.trends.spark(f"conversion_ratio:{campaign}", at),
                          change("ratio", ratio, before))
        if room and len(shown) < len(campaigns):
            table.add_row(f"(+{len(campaigns) - len(shown)} more on /metrics)", "", "", "")
        lines: list[RenderableType] = [_line(status, "bold"), table]
        p = self.pipeline
        lines.append(_line(f"pipeline  {p.rate:,.0f} msg/s {self.trends.spark('rate', at)}"
                           f"  lag {p.lag:,}  folded {p.folded:,.0f}"))
        lines.append(_line("dead letters  " + _dead_letters(figs)))
        lines.append(_line(""))
        lines.append(_link("metrics ", self.links.metrics, self.links.metrics))
        graph = self.links.graph()
        if graph is not None and self.links.graph_page is not None:
            lines.append(_link("graphs  ", self.links.graph_page, graph))
        else:
            lines.append(_line("graphs   Prometheus not running"))
        if self.links.alerts_page is not None:
            lines.append(_link("alerts  ", self.links.alerts_page, self.links.alerts_page))
        else:
            lines.append(_line("alerts   Prometheus not running"))
        return Group(*lines)

    def plain_line(self, clock: str) -> str:
        """The main figures in one line, for output that is not a terminal."""
        figs, p = self.figs, self.pipeline
        parts = [clock]
        for name, kind in _LINE_FIGURES:
            versus = change(kind, figs.get(name), figs.get("previous_day_" + name))
            parts.append(f"{name}={_value(kind, figs.get(name))}"
                         + (f" ({versus} vs yesterday)" if versus else ""))
        parts.append(f"rate={p.rate:,.0f}/s lag={p.lag:,} dead_letters={_dead_letters(figs)}")
        return " ".join(parts)


def _dead_letters(figs: dict[str, Any]) -> str:
    dead = figs.get("dead_letter_total", {})
    return " · ".join(f"{k} {v:,}" for k, v in dead.items() if v) or "none"


def _line(text: str, style: str = "") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _link(label: str, shown: str, target: str) -> Text:
    """`label` and the address `shown`, which a terminal that knows links opens at
    `target` (a Prometheus graph URL is too long for one line)."""
    text = Text(label + " ", no_wrap=True, overflow="ellipsis")
    text.append(shown, style=Style(link=target, underline=True))
    return text

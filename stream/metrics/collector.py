"""Prometheus side: a custom Collector that reads the figures from Redis at scrape time
(cached briefly) and renders each figure of the catalogue (`stream/catalogue.py`).

The figures are the same on every worker (they are read from Redis); the worker's own
health metrics are in `health.py`. The figures cache keeps a scrape cheap: Redis is
read at most once per `cache_seconds`, through the collector's own connection, never the
fold's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..catalogue import CATALOGUE, Figure


class FiguresCollector(Collector):
    """Exports every figure of `figures.compute`, read through `read` (which may raise:
    a failed read exports no figures and counts a Redis error).

    With `cache_seconds` > 0 and `start()` called, a background thread reads the figures
    every `cache_seconds` and a scrape only renders the latest snapshot: it never waits
    for Redis, which may be busy applying a batch (a scrape that read Redis itself waited
    up to one batch's apply, over 100 ms under load). Without the thread (or with 0), a
    scrape reads Redis when the cached figures are older than `cache_seconds`."""

    def __init__(
        self,
        read: Callable[[], dict[str, Any]],
        cache_seconds: float = 1.0,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._read = read
        self._cache_seconds = cache_seconds
        self._on_error = on_error
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Refresh in the background (no-op when `cache_seconds` is 0); the first read
        happens here, so the first scrape already has figures."""
        if self._cache_seconds <= 0 or self._thread is not None:
            return
        self._refresh()
        self._thread = threading.Thread(target=self._loop, name="figures-refresh",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._refresh()
            self._stop.wait(max(0.0, self._cache_seconds - (time.monotonic() - started)))

    def _refresh(self) -> None:
        try:
            figs: dict[str, Any] | None = self._read()
        except Exception as exc:  # Redis down: report health, not stale figures
            figs = None
            if self._on_error is not None:
                self._on_error(exc)
        with self._lock:
            self._cached = figs
            self._cached_at = time.monotonic()

    def figures(self) -> dict[str, Any] | None:
        """The latest figures: the background snapshot, or a read when the cache is
        older than `cache_seconds` (no background thread)."""
        if self._thread is not None:
            with self._lock:
                return self._cached
        with self._lock:
            stale = self._cached is None or (
                time.monotonic() - self._cached_at >= self._cache_seconds)
        if stale:
            self._refresh()
        with self._lock:
            return self._cached

    def collect(self) -> Iterator[Metric]:
        figs = self.figures()
        if figs is None:
            return
        for figure in CATALOGUE:
            metric = render(figure, figs.get(figure.name))
            if metric is not None:
                yield metric


def render(figure: Figure, value: Any) -> Metric | None:
    """One figure as its metric family: `value` as `figures.compute` gives it (nested
    dicts one level per label), None when absent. An absent figure is not exported,
    except a labelled one that is always computed (not `optional`): a family without
    samples."""
    if value is None and (figure.optional or not figure.labels):
        return None
    if figure.counter:
        # prometheus_client adds `_total` to a counter's sample; the family is without.
        family: CounterMetricFamily | GaugeMetricFamily = CounterMetricFamily(
            figure.metric.removesuffix("_total"), figure.help, labels=figure.labels)
    else:
        family = GaugeMetricFamily(figure.metric, figure.help, labels=figure.labels)
    if not figure.labels:
        family.add_metric([], value)
        return family
    for labels, sample in _samples(value or {}, len(figure.labels)):
        family.add_metric(labels, sample)
    return family


def _samples(value: Any, depth: int) -> Iterator[tuple[list[str], Any]]:
    """(label values, number) of a figure nested `depth` dicts deep, in dict order."""
    if depth == 0:
        yield [], value
        return
    for key, inner in value.items():
        for rest, sample in _samples(inner, depth - 1):
            yield [key, *rest], sample

"""Prometheus side: a custom Collector that reads the figures from Redis at scrape time
(cached briefly), and the pipeline's own health metrics.

The figures are the same on every worker (they are read from Redis), the health metrics
are per worker. The figures cache keeps a scrape cheap: Redis is read at most once per
`cache_seconds`, through the collector's own connection, never the fold's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..figures import LABELS, METRICS, SEGMENT_COHORT_FIGURES, SEGMENT_FIGURES

PREFIX = "engagement_"


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
        for name, help_text in METRICS.items():
            metric = PREFIX + name
            value = figs.get(name)
            if name in ("conversion_ratio", "previous_day_conversion_ratio"):
                g = GaugeMetricFamily(metric, help_text, labels=[LABELS[name]])
                for campaign, ratio in (value or {}).items():
                    g.add_metric([campaign], ratio)
                yield g
            elif name in ("days_active_users", "previous_day_days_active_users"):
                if value is None:
                    continue
                g = GaugeMetricFamily(metric, help_text, labels=["window", "days"])
                for window, per in value.items():
                    for k, users in per.items():
                        g.add_metric([window, k], users)
                yield g
            elif name in ("lifecycle_users", "previous_day_lifecycle_users"):
                if value is None:
                    continue
                g = GaugeMetricFamily(metric, help_text, labels=["state"])
                for state, users in value.items():
                    g.add_metric([state], users)
                yield g
            elif name in SEGMENT_COHORT_FIGURES:
                if value is None:
                    continue
                g = GaugeMetricFamily(metric, help_text, labels=["dimension", "value", "day"])
                for dim, per in value.items():
                    for v, by_day in per.items():
                        for n, figure in by_day.items():
                            g.add_metric([dim, v, n], figure)
                yield g
            elif LABELS.get(name) == "day":
                g = GaugeMetricFamily(metric, help_text, labels=["day"])
                for n, figure in (value or {}).items():
                    g.add_metric([n], figure)
                yield g
            elif name == "late_events_total":
                c = CounterMetricFamily(metric.removesuffix("_total"), help_text, labels=["age"])
                for age, count in (value or {}).items():
                    c.add_metric([age], count)
                yield c
            elif name in SEGMENT_FIGURES:
                if value is None:
                    continue
                g = GaugeMetricFamily(metric, help_text, labels=["dimension", "value"])
                for dim, per in value.items():
                    for v, figure in per.items():
                        g.add_metric([dim, v], figure)
                yield g
            elif name == "ignored_total":
                c = CounterMetricFamily(metric.removesuffix("_total"), help_text,
                                        labels=[LABELS[name]])
                for key, count in (value or {}).items():
                    c.add_metric([key], count)
                yield c
            elif name in ("events_total", "dead_letter_total"):
                label = LABELS[name]
                c = CounterMetricFamily(metric.removesuffix("_total"), help_text, labels=[label])
                for key, count in (value or {}).items():
                    c.add_metric([key], count)
                yield c
            elif name == "users_forgotten_total":
                if value is not None:
                    yield CounterMetricFamily(metric.removesuffix("_total"), help_text,
                                              value=value)
            elif value is not None:
                yield GaugeMetricFamily(metric, help_text, value=value)


class Health:
    """The worker's own health: per-worker metrics plus the state behind the probes.

    Times are seconds; `stall_seconds` is how long lag may stay > 0 without progress
    before the worker counts as stalled (liveness fails)."""

    def __init__(self, registry: CollectorRegistry, stall_seconds: float = 120.0) -> None:
        self.stall_seconds = stall_seconds
        self.lag = Gauge(PREFIX + "consumer_lag", "Messages behind the fetch highwater.",
                         ["topic", "partition"], registry=registry)
        self.last_event = Gauge(PREFIX + "last_event_timestamp_seconds",
                                "Unix time this worker last folded an event (0: never).",
                                registry=registry)
        self.since_last = Gauge(PREFIX + "seconds_since_last_event",
                                "Seconds since this worker last folded an event.",
                                registry=registry)
        self.apply_seconds = Histogram(
            PREFIX + "batch_apply_seconds", "Time to apply one batch to Redis.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry)
        self.batch_size = Histogram(
            PREFIX + "batch_messages", "Messages per batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000), registry=registry)
        self.redis_errors = Counter(PREFIX + "redis_errors", "Redis errors seen by this worker.",
                                    registry=registry)
        self.processed = Counter(PREFIX + "messages_processed",
                                 "Messages this worker processed (valid or dead-lettered).",
                                 ["topic"], registry=registry)
        self.ready_gauge = Gauge(PREFIX + "worker_ready",
                                 "1 when Redis is reachable and partitions are assigned.",
                                 registry=registry)
        self.dead_letter_failing_gauge = Gauge(
            PREFIX + "dead_letter_failing",
            "1 while the dead-letter topic keeps refusing this worker's dead letters "
            "(after bounded retries; /healthz answers 503, no partition moves).",
            registry=registry)
        self.dead_letter_errors = Counter(
            PREFIX + "dead_letter_produce_errors",
            "Dead letters the dead-letter topic refused (each attempt; retried).",
            registry=registry)
        self.dead_letter_values_omitted = Counter(
            PREFIX + "dead_letter_values_omitted",
            "Dead letters produced without their value: too large for the dead-letter topic.",
            registry=registry)
        self.unreadable_batches = Counter(
            PREFIX + "unreadable_batches",
            "Kafka record batches this worker could not read and dead-lettered whole "
            "(reason unreadable_batch).", registry=registry)
        self.dead_letter_failing = False
        info = Gauge(PREFIX + "build_info", "Version of engagement-stream.", ["version"],
                     registry=registry)
        info.labels(__version__).set(1)
        self.since_last.set_function(self._since_last)
        self._started = time.time()
        self._last_event_at = 0.0
        self._progress_at = time.monotonic()
        self._lag_total = 0
        self.redis_ok = False
        self.assigned = False

    def _since_last(self) -> float:
        return time.time() - (self._last_event_at or self._started)

    def folded(self, count: int) -> None:
        """A batch of `count` messages was applied."""
        now = time.time()
        if count:
            self._last_event_at = now
            self.last_event.set(now)
        self._progress_at = time.monotonic()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def set_total_lag(self, total: int) -> None:
        if total == 0:
            self._progress_at = time.monotonic()
        self._lag_total = total

    def forget_partition(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self.lag.remove(topic, str(partition))

    def set_ready(self, redis_ok: bool | None = None, assigned: bool | None = None) -> None:
        if redis_ok is not None:
            if redis_ok and not self.redis_ok:
                self._progress_at = time.monotonic()  # the stall clock restarts
            self.redis_ok = redis_ok
        if assigned is not None:
            self.assigned = assigned
        self.ready_gauge.set(1 if self.ready else 0)

    @property
    def lag_total(self) -> int:
        """Messages behind over all assigned partitions, as of the last batch."""
        return self._lag_total

    @property
    def ready(self) -> bool:
        return self.redis_ok and self.assigned

    def stalled_for(self) -> float:
        """Seconds the consumer has had lag without progress (0 when not stalled).

        Not while Redis is unreachable: the worker is waiting it out (readiness fails and
        `engagement_redis_errors` grows); a restart would not help, so liveness holds."""
        if self._lag_total <= 0 or not self.redis_ok:
            return 0.0
        return time.monotonic() - self._progress_at

    def set_dead_letter_failing(self, failing: bool) -> None:
        """The dead-letter topic keeps refusing dead letters (liveness fails) or not."""
        self.dead_letter_failing = failing
        self.dead_letter_failing_gauge.set(1 if failing else 0)

    @property
    def live(self) -> bool:
        return self.stalled_for() < self.stall_seconds and not self.dead_letter_failing

"""The worker's own health: per-worker metrics (lag, batch timings, errors, readiness)
and the state behind the `/healthz` and `/readyz` probes.

Unlike the figures (read from Redis, the same on every worker), these are per worker:
one `Health` per process, registered on the registry given to its constructor.
"""

from __future__ import annotations

import contextlib
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .. import __version__
from ..catalogue import PREFIX


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

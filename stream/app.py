"""Wiring: settings -> store, collector, HTTP endpoints and worker. Used by the `worker`
and `demo` commands and by tests that run a worker in-process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry, disable_created_metrics

from . import _compiled, figures
from .kafka.aiokafka_source import AiokafkaSource
from .kafka.deadletters import make_producer
from .kafka.offsetrange import OffsetRangeCollector
from .kafka.source import Source
from .keys import KeySpace
from .metrics.collector import FiguresCollector
from .metrics.health import Health
from .metrics.httpserver import MetricsServer
from .privacy import fingerprint, user_id_hasher
from .segments import Segments, parse_dims
from .settings import Settings
from .store.scan import scan_loop
from .store.store import Store, StoreParams, connect
from .store.sweep import maintenance_loop
from .timebuckets import SYSTEM_CLOCK, Clock, DayMapper
from .worker import Worker, _GiveUp

log = logging.getLogger("stream")


def open_store(settings: Settings, **client_options: Any) -> Store:
    """A Store for the settings' Redis (not yet checked against its stored parameters)."""
    keys = KeySpace(
        prefix=settings.key_prefix,
        shards=settings.shards,
        buckets=max(1, settings.user_buckets // settings.shards),
        max_lateness_days=settings.max_lateness_days,
        retention_days=settings.retention_days,
    )
    user_ids = user_id_hasher(settings)
    params = StoreParams(settings.timezone, settings.shards, settings.user_buckets,
                         fingerprint(user_ids))
    client = connect(settings.redis_url.get_secret_value(), settings.redis_cluster,
                     settings.sentinel_list, settings.redis_sentinel_master,
                     (settings.redis_sentinel_password.get_secret_value()
                      if settings.redis_sentinel_password else None), **client_options)
    return Store(client, keys, params, campaign_max_series=settings.campaign_max_series,
                 segments=(Segments(parse_dims(settings.segments), settings.segment_max_values)
                           if settings.segments else None),
                 user_ids=user_ids)


def read_figures(store: Store, days: DayMapper, day: int | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """The contract's figures from Redis, as of local `day` (default: today under `days`
    by `clock`), with the `previous_day_*` family (those of the day before)."""
    today = days.today(clock.now()) if day is None else day
    return figures.compute(store.read(today, previous=True))


def make_source(settings: Settings) -> Source:
    """The worker's consumer, on the Kafka client `STREAM_KAFKA_CLIENT` names (the faust
    engine's source is built by the `worker` command and passed to `run_worker`: the
    engine runs the worker, so the worker's wiring does not import it)."""
    if settings.kafka_client == "confluent":
        from .kafka.confluent import ConfluentSource

        return ConfluentSource(settings)
    return AiokafkaSource(settings)


@dataclass
class Runtime:
    """A running worker's parts, for callers that need to look inside (tests, demo)."""

    settings: Settings
    store: Store
    health: Health
    server: MetricsServer
    worker: Worker
    stop: asyncio.Event


async def run_worker(settings: Settings, started: asyncio.Future[Runtime] | None = None,
                     stop: asyncio.Event | None = None, install_signals: bool = True,
                     source: Source | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
    """Run a worker until SIGTERM/SIGINT (or `stop`): consume, fold, serve /metrics.

    On a signal the batch in flight is finished and committed, the group is left and the
    function returns (exit code 0). `source` replaces the consumer `make_source` builds
    (the faust engine's embedding API passes the one of a faust App it runs inside).
    The one day mapper of the process is built here, and with `clock` handed to every
    part that needs today: the worker, the figures, the scan and sweep loops."""
    stop = stop or asyncio.Event()
    if install_signals:
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if not stop.is_set():
                log.info("stopping: finishing the batch in flight, committing, leaving")
                _exit_later(settings.shutdown_seconds, 1, "shutdown")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: scrape noise
    registry = CollectorRegistry()
    days = DayMapper(settings.timezone)
    health = Health(registry, settings.stall_seconds)
    fold_store = open_store(settings)
    # Scrapes use their own connection, with short timeouts: while Redis hangs, /metrics
    # still answers promptly (health metrics, no figures) instead of outwaiting the
    # scraper.
    scrape_store = open_store(settings, socket_timeout=2, socket_connect_timeout=2)

    def on_scrape_error(exc: Exception) -> None:
        health.redis_errors.inc()
        log.warning("figures not readable from Redis: %s", exc)

    figures_collector = FiguresCollector(lambda: read_figures(scrape_store, days, None, clock),
                                         settings.metrics_cache_seconds, on_scrape_error)
    registry.register(figures_collector)
    registry.register(OffsetRangeCollector(scrape_store, settings.topic_list))
    figures_collector.start()
    server = MetricsServer(registry, settings.metrics_host, settings.metrics_port,
                           live=lambda: health.live, ready=lambda: health.ready)
    server.start()
    log.info("serving http://%s:%d/metrics", settings.metrics_host, server.port)
    producer = await _start_producer(settings, stop)
    if producer is None:  # stopped while the brokers were unreachable
        server.stop()
        figures_collector.stop()
        fold_store.close()
        scrape_store.close()
        return
    worker = Worker(settings, fold_store, source or make_source(settings), producer, health,
                    days, clock)
    if started is not None:
        started.set_result(Runtime(settings, fold_store, health, server, worker, stop))
    watchdog = asyncio.create_task(
        _watchdog(health, stop, settings.shutdown_seconds if install_signals else None))
    upkeep = asyncio.create_task(maintenance_loop(fold_store, days, clock, stop))
    scanner = asyncio.create_task(scan_loop(fold_store, days, clock, stop))
    collector_task = asyncio.create_task(_collect_garbage(stop))
    _tune_gc()
    unused = _compiled.unused_parts_warning()
    if unused is not None:
        log.warning("%s", unused)
    try:
        await worker.run(stop)
    except _GiveUp as exc:  # stopped while Redis or the dead-letter topic was unavailable
        log.warning("%s: the batch in flight was not applied; it will be read again", exc)
    finally:
        watchdog.cancel()
        upkeep.cancel()
        scanner.cancel()
        collector_task.cancel()
        await producer.stop()
        server.stop()
        figures_collector.stop()
        fold_store.close()
        scrape_store.close()
    if health.stalled_for() >= 2 * health.stall_seconds:
        raise Stalled(f"no progress for {health.stalled_for():.0f}s with lag; exiting")


#: Longest pause between attempts to reach unreachable brokers at start, seconds.
BROKER_RETRY_MAX_SECONDS = 30.0


async def _start_producer(settings: Settings,
                          stop: asyncio.Event) -> AIOKafkaProducer | None:
    """The dead-letter producer, started. Brokers unreachable at start are waited for
    (like Redis): /metrics is served meanwhile, /readyz answers 503 and a warning is
    logged at each attempt (1 s doubling to 30 s apart), so the order in which Kafka,
    Redis and the workers come up does not matter. None when `stop` is set first."""
    delay = 1.0
    while True:
        producer = make_producer(settings)
        try:
            await producer.start()
            return producer
        except KafkaConnectionError as exc:
            # A producer that failed to start is discarded: aiokafka's cannot be restarted.
            with contextlib.suppress(Exception):
                await producer.stop()
            log.warning("Kafka brokers %s unreachable (%s); retrying in %.0fs, not ready "
                        "meanwhile", settings.kafka_brokers, exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return None
        delay = min(delay * 2, BROKER_RETRY_MAX_SECONDS)


def limit_malloc_arenas() -> None:
    """glibc malloc settings that keep the worker's RSS flat at a steady rate:
    - at most two arenas: glibc gives threads arenas of their own (up to 8 per core),
      and the worker's threads (the Redis calls, the figures refresh, one per scrape)
      each kept freed memory in theirs;
    - a fixed mmap threshold (128 KiB): by default it rises after large blocks are
      freed, so the batch-sized buffers (fetch responses, encoded plans) moved into the
      heap, where they left holes; mmapped, they go back to the system when freed.
    At a steady 5000 events/s the worker's RSS crept up by 1-2 MB a minute before. The
    worker command calls it before any thread starts; a no-op where the C library is not
    glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3


def _tune_gc() -> None:
    """Fewer garbage-collector passes on the hot path: every batch allocates tens of
    thousands of short-lived containers, and with the default generation-0 threshold (700)
    the collector ran hundreds of times per batch, for nothing (the fold makes no cycles).
    Objects alive after start-up are frozen out of all later collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    # The Redis thread needs the GIL for a moment at each step of a batch (build the
    # call, read the reply) while the event loop decodes the next batch: with the default
    # 5 ms switch interval each of those moments waited up to 5 ms.
    sys.setswitchinterval(0.0005)


#: Seconds between full garbage collections (see `_collect_garbage`).
GC_EVERY_SECONDS = 30.0


async def _collect_garbage(stop: asyncio.Event) -> None:
    """A full collection every GC_EVERY_SECONDS. With the raised thresholds of `_tune_gc`
    the oldest generation is almost never collected on its own, and the event loop's
    reference cycles (tasks, futures, exceptions) pile up there: worker memory grew by
    about 2 MB a minute at a steady 5000 events/s. The start-up objects are frozen, so a
    collection scans only what came later: milliseconds."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=GC_EVERY_SECONDS)
        gc.collect()


class Stalled(Exception):
    """The consumer made no progress with lag for twice `stall_seconds`."""


async def _watchdog(health: Health, stop: asyncio.Event,
                    exit_after: float | None = None) -> None:
    """Liveness fails after `stall_seconds` without progress; after twice that the worker
    stops itself with a non-zero exit so the orchestrator restarts it. With `exit_after`
    (a real process), a shutdown that hangs too (a frozen broker) ends the process anyway
    after that many seconds, with exit code 3."""
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if health.stalled_for() >= 2 * health.stall_seconds:
            log.error("stalled for %.0fs with lag; stopping", health.stalled_for())
            if exit_after is not None:
                _exit_later(exit_after, 3, "stalled")
            stop.set()


def _exit_later(seconds: float, code: int, why: str) -> None:
    """Last resort when a clean stop hangs (broker or Redis frozen): exit with `code`
    `seconds` from now without further clean-up. Nothing is lost by it: the offsets in
    Redis, not the ones committed to Kafka, decide where the partitions resume."""

    def fire() -> None:
        log.error("%s: not stopped cleanly within %.0fs; exiting with code %d",
                  why, seconds, code)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()

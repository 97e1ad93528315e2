"""`backfill`: replay a topic's history into the store, idempotently, beside the live group.

1. The bounded source (`stream.kafka.bounded.BoundedSource`) reads every partition of the
   topics without a consumer group (the live group is never joined or rebalanced, and its
   committed offsets are never touched), from `--from-offset N` (the same N on every
   partition) or the first message whose Kafka timestamp is at or after `--from-time`, up
   to each partition's fetch highwater when the backfill starts (messages produced later
   are the live worker's).
2. The records go through the worker's own batch path (`stream.worker.Worker`: decode ->
   fold -> store.apply with their offsets, dead letters produced first through its
   dead-letter sink), so a partition resumes after the offsets already applied in Redis:
   re-running changes nothing, and a message at or below them would be skipped anyway.
3. The progress is reported as the batches are handed over, and the final `Progress` is
   the summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry

from .kafka.bounded import BackfillError, BoundedSource, Progress
from .kafka.deadletters import make_producer
from .metrics.health import Health
from .settings import Settings
from .store.store import Store
from .timebuckets import SYSTEM_CLOCK, Clock, DayMapper
from .worker import Worker, _GiveUp

log = logging.getLogger("stream.backfill")

__all__ = ["BackfillError", "Progress", "run_backfill"]


async def run_backfill(settings: Settings, store: Store, topics: Iterable[str], *,
                       from_offset: int | None = None, from_time: datetime | None = None,
                       on_progress: Callable[[Progress], None] | None = None,
                       stop: asyncio.Event | None = None, days: DayMapper | None = None,
                       clock: Clock = SYSTEM_CLOCK) -> Progress:
    """Replay `topics` from the start given up to their highwaters at start into `store`.
    `days` and `clock` are the command's, passed on to the worker (`Worker`).

    Returns the final progress (`finished` False when `stop` was set from outside, e.g.
    by a signal: what was applied stays, and a re-run continues from there)."""
    done = asyncio.Event()
    outer = stop or asyncio.Event()
    source = BoundedSource(settings, topics, done, from_offset=from_offset,
                            from_time=from_time, on_progress=on_progress)
    producer = make_producer(settings)
    await producer.start()
    worker = Worker(settings, store, source, producer,
                    Health(CollectorRegistry(), settings.stall_seconds), days, clock)
    relay = asyncio.create_task(_relay(outer, done))
    try:
        await worker.run(done)
    except _GiveUp as exc:
        # Interrupted while Redis (or the dead-letter topic) was unavailable: the batch in
        # flight was not applied and a re-run reads it again; an interruption, not a failure.
        log.info("%s: the batch in flight was not applied", exc)
    finally:
        relay.cancel()
        await producer.stop()
    source.progress.finished = not outer.is_set()
    source._report()
    return source.progress


async def _relay(outer: asyncio.Event, done: asyncio.Event) -> None:
    await outer.wait()
    done.set()

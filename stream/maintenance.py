"""Daily upkeep that keeps Redis memory bounded: prune per-user records that no figure
can need any more, and fold old difference-array fields (lua/sweep.lua).

One worker does it per day: the first to take the day's lock (SET NX with expiry). It
runs in slices of 256 user buckets, one short Lua call each, so Redis is never blocked
for long, and the fold keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging

from .store import Store
from .timebuckets import DayMapper, utc_now

log = logging.getLogger("stream.maintenance")

#: User buckets per Lua call: ~256 small hashes, a few milliseconds of Redis time.
SLICE = 256
#: Days of activity a user record can still need (the bitmap's reach).
ACTIVITY_DAYS = 48
#: Seconds between checks whether today's upkeep is done.
CHECK_EVERY = 600.0


def sweep(store: Store, today: int) -> tuple[int, int]:
    """Prune and compact every shard now; returns (records deleted, fields folded).

    Difference-array fields older than the lateness horizon plus 40 days are folded:
    no event can land before them any more, and every prefix sum from there on keeps its
    value."""
    source = importlib.resources.files("stream").joinpath("lua", "sweep.lua").read_text()
    script = store.client.register_script(source)
    keys = store.keys
    cutoff = today - keys.max_lateness_days - 40
    deleted = folded = 0
    for shard in range(keys.shards):
        for first in range(0, keys.buckets, SLICE):
            last = min(first + SLICE, keys.buckets) - 1
            # compact once per shard, with the first slice
            compact = cutoff if first == 0 else 0
            d, f = script(keys=[keys.offsets(shard)],
                          args=[keys.tag(shard), first, last, today - ACTIVITY_DAYS, compact])
            deleted += int(d)
            folded += int(f)
    return deleted, folded


def claim_day(store: Store, today: int) -> bool:
    """True for the one worker that gets to sweep today (lock kept for two days)."""
    return bool(store.client.set(f"{store.keys.prefix}:sweep:{today}", "1", nx=True,
                                 ex=2 * 86_400))


async def maintenance_loop(store: Store, zone: str, stop: asyncio.Event) -> None:
    """Sweep once a day (whichever worker claims the day); errors are logged and retried
    at the next check, never fatal to the worker."""
    days = DayMapper(zone)
    while not stop.is_set():
        today = days.today(utc_now())
        claimed = False
        try:
            claimed = await asyncio.to_thread(claim_day, store, today)
            if claimed:
                deleted, folded = await asyncio.to_thread(sweep, store, today)
                log.info("daily upkeep: %d stale user records deleted, %d old fields folded",
                         deleted, folded)
        except Exception as exc:  # Redis down: the worker's own retry loop reports it
            log.warning("daily upkeep failed, retrying later: %s", exc)
            if claimed:  # let this or another worker try again at the next check
                with contextlib.suppress(Exception):
                    store.client.delete(f"{store.keys.prefix}:sweep:{today}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=CHECK_EVERY)

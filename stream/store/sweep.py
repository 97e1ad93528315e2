"""Daily upkeep that keeps Redis hashes small: fold old difference-array fields
(lua/sweep.lua). Per-day keys (HyperLogLogs, bitmaps, counters) expire by themselves.

One worker does it per day: the first to take the day's lock (SET NX with expiry): one
short Lua call per shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..timebuckets import Clock, DayMapper
from .store import Store

log = logging.getLogger("stream.maintenance")

#: Seconds between checks whether today's upkeep is done.
CHECK_EVERY = 600.0


def sweep(store: Store, today: int) -> int:
    """Compact every shard now; returns the number of fields folded.

    Difference-array fields older than the lateness horizon plus 40 days are folded:
    no event can land before them any more, and every prefix sum from there on keeps its
    value."""
    keys = store.keys
    cutoff = today - keys.max_lateness_days - 40
    return sum(int(store.scripts.call("sweep", [keys.offsets(shard)], keys.tag(shard), cutoff))
               for shard in range(keys.shards))


def claim_day(store: Store, today: int) -> bool:
    """True for the one worker that gets to sweep today (lock kept for two days)."""
    return bool(store.client.set(f"{store.keys.prefix}:sweep:{today}", "1", nx=True,
                                 ex=2 * 86_400))


async def maintenance_loop(store: Store, days: DayMapper, clock: Clock,
                           stop: asyncio.Event) -> None:
    """Sweep once a day (whichever worker claims the day; `days` and `clock` the worker's
    own); errors are logged and retried at the next check, never fatal to the worker."""
    while not stop.is_set():
        today = days.today(clock.now())
        claimed = False
        try:
            claimed = await asyncio.to_thread(claim_day, store, today)
            if claimed:
                folded = await asyncio.to_thread(sweep, store, today)
                log.info("daily upkeep: %d old fields folded", folded)
        except Exception as exc:  # Redis down: the worker's own retry loop reports it
            log.warning("daily upkeep failed, retrying later: %s", exc)
            if claimed:  # let this or another worker try again at the next check
                with contextlib.suppress(Exception):
                    store.client.delete(f"{store.keys.prefix}:sweep:{today}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=CHECK_EVERY)

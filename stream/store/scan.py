"""Periodic exact scan of the per-day activity bitmaps: the days-active distribution and
the lifecycle of active users, for today and yesterday (lua/scan.lua).

Why a scan and not the fold: both figures are exact functions of the 48 days of
activity bitmaps the store keeps. Keeping them incrementally would cost the hot path
up to ~120 difference-array writes per new (user, day) for the 30-day window, heavy on a
bulk replay; the scan costs the fold nothing and reads each bitmap once per period.

One worker scans per period: whoever takes `P:scan:lock` (SET NX with expiry). It walks
every shard in slices of user numbers, one short read-only Lua call each, sums the counts
and stores them with the scan's time in the `P:scan` hash, which every worker exports.
The period adapts to the cost: at least `MIN_INTERVAL` seconds and at least `COST_FACTOR`
times the Redis time of the last scan, so the scan never takes more than ~5% of Redis.
The result is as of the scan (records change while it runs, a few seconds at most), and
`engagement_days_active_computed_timestamp_seconds` shows its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..timebuckets import SYSTEM_CLOCK, Clock, DayMapper
from . import wire
from .store import Store

log = logging.getLogger("stream.scan")

#: Bitmap bytes per Lua call: 8192 user numbers (~10 ms of Redis time when all active).
SLICE = 1024
MIN_INTERVAL = 60.0
COST_FACTOR = 20.0
#: Seconds between attempts to take the lock.
CHECK_EVERY = 15.0
LIFECYCLE = ("new", "returning", "resurrecting", "dormant")
PER_DAY = 7 + 30 + len(LIFECYCLE)


def scan(store: Store, today: int) -> tuple[list[int], float]:
    """Scan every record now: 2 x PER_DAY counts (today, then yesterday; see scan.lua)
    and the seconds spent waiting for Redis."""
    keys = store.keys
    totals = [0] * (2 * PER_DAY)
    spent = 0.0
    for shard in range(keys.shards):
        # numbers given so far: 0 .. seq - 1 (`seq` is the next one)
        seq = int(store.client.get(keys.seq(shard)) or 0)
        for first in range(0, (seq + 7) // 8, SLICE):
            last = first + SLICE - 1
            started = time.perf_counter()
            counts = store.scripts.call("scan", [keys.offsets(shard)], keys.tag(shard),
                                        first, last, today)
            spent += time.perf_counter() - started
            for j, c in enumerate(counts):
                totals[j] += int(c)
    return totals, spent


def as_fields(counts: list[int], today: int, at: float, spent: float) -> dict[str, str | int]:
    """The `P:scan` hash: `today`, `at` (unix time), `seconds` (Redis time), and per day
    offset o (0 today, 1 yesterday) `o:d7:<k>`, `o:d30:<k>`, `o:lc:<state>`."""
    fields: dict[str, str | int] = {wire.SCAN_TODAY: today, wire.SCAN_AT: f"{at:.3f}",
                                    wire.SCAN_SECONDS: f"{spent:.4f}"}
    for o in (0, 1):
        base = o * PER_DAY
        for k in range(1, 8):
            fields[wire.days_active_field(o, 7, k)] = counts[base + k - 1]
        for k in range(1, 31):
            fields[wire.days_active_field(o, 30, k)] = counts[base + 6 + k]
        for j, state in enumerate(LIFECYCLE):
            fields[wire.lifecycle_field(o, state)] = counts[base + 37 + j]
    return fields


def scan_and_save(store: Store, today: int, clock: Clock = SYSTEM_CLOCK) -> float:
    """Scan, store the result in `P:scan` stamped with `clock`'s time; returns the Redis
    seconds spent."""
    counts, spent = scan(store, today)
    key = store.keys.scan
    pipe = store.client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=as_fields(counts, today, clock.seconds(), spent))  # type: ignore[arg-type]
    pipe.execute()
    return spent


def next_interval(spent: float) -> float:
    return max(MIN_INTERVAL, COST_FACTOR * spent)


async def scan_loop(store: Store, days: DayMapper, clock: Clock,
                    stop: asyncio.Event) -> None:
    """Scan whenever this worker takes the lock (`days` and `clock` the worker's own);
    errors are logged and retried."""
    lock = store.keys.scan + ":lock"
    while not stop.is_set():
        try:
            if await asyncio.to_thread(store.client.set, lock, "1", nx=True,
                                       ex=int(MIN_INTERVAL)):
                spent = await asyncio.to_thread(scan_and_save, store,
                                                days.today(clock.now()), clock)
                await asyncio.to_thread(store.client.expire, lock,
                                        int(next_interval(spent)) + 1)
                log.debug("user scan: %.3fs of Redis time", spent)
        except Exception as exc:  # Redis down: the worker's own retry loop reports it
            log.warning("user scan failed, retrying later: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=CHECK_EVERY)

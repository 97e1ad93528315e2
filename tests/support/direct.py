"""Drive the processor's pure path and store directly, with a clock chosen by the test.

The worker reads the real clock; tests of fixed dates (daylight-saving transitions,
past days) fold raw messages through ``events.decode -> fold.fold -> Store.apply`` with
``now`` of their choice instead, exactly as the worker does for one batch.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from datetime import datetime

from stream.decode import Message
from stream.events import decode
from stream.fold import FoldContext, fold
from stream.keys import KeySpace
from stream.store.store import Store, StoreParams, connect
from stream.timebuckets import DayMapper, ms, utc_now


class _RealClockIds(KeySpace):
    """Event-id generations of the real day at the latest: id keys expire by the real
    clock, so those of a fixed past clock would be gone as soon as written."""

    def id_generations(self, today: int) -> tuple[list[str], str, str, int, int]:
        real_today = DayMapper("UTC").today(utc_now()) + 1
        return KeySpace.id_generations(self, max(today, real_today))


def store_context(store: Store, days: DayMapper, today: int,
                  applied: dict[tuple[str, int], int],
                  seen: dict[str, int] | None = None) -> FoldContext:
    """The fold's context for a batch into ``store``, as the worker builds it
    (``Worker._context``): the store's segment registry and user-id hashing included."""
    return FoldContext(store.keys, days, today, applied, {} if seen is None else seen,
                       user_ids=store.user_ids, segments=store.segments)


def fresh_store(url: str, zone: str, shards: int = 1, buckets: int = 64,
                retention_days: int = 2000) -> Store:
    """An emptied Redis at ``url`` as a store of ``zone`` (scripts loaded, meta recorded).

    Per-day keys and event ids expire by the real clock; a long retention and id
    generations of the real day keep those of fixed past dates (a test's clock) alive."""
    client = connect(url, cluster=False)
    client.flushall()
    keys = _RealClockIds(shards=shards, buckets=max(1, buckets // shards),
                    retention_days=retention_days)
    store = Store(client, keys, StoreParams(zone, shards, buckets))
    store.load_scripts()
    store.check_meta()
    return store


def fold_messages(store: Store, messages: Sequence[tuple[str, bytes | None, bytes | None]],
                  now: datetime, zone: str, partitions: int = 4, batch: int = 400,
                  seed: int = 0, max_lateness_days: int = 400) -> list[bytes | None]:
    """Fold ``(topic, key, value)`` messages as a worker with clock ``now`` would: each to
    partition ``crc32(key) % partitions`` of its topic (a random one without a key), so
    one topic and key keep their order, in batches of about ``batch`` messages taken from
    the partitions in a seeded random mix. Returns the values in the order folded."""
    days = DayMapper(zone)
    today = days.today(now)
    now_ms = ms(now)
    lateness = max_lateness_days * 86_400_000
    rnd = random.Random(seed)
    by_src: dict[str, list[Message]] = {}
    for topic, key, v in messages:
        p = zlib.crc32(key) % partitions if key is not None else rnd.randrange(partitions)
        q = by_src.setdefault(f"{topic}/{p}", [])
        q.append(Message(f"{topic}/{p}", len(q), decode(v, now_ms, lateness), v))
    queues = list(by_src.values())
    partitions = len(queues)
    applied: dict[tuple[str, int], int] = {}
    pos = [0] * partitions
    order: list[bytes | None] = []
    while any(pos[p] < len(queues[p]) for p in range(partitions)):
        chunk: list[Message] = []
        for p in range(partitions):
            take = rnd.randint(0, max(1, 2 * batch // partitions))
            chunk += queues[p][pos[p]:pos[p] + take]
            pos[p] = min(len(queues[p]), pos[p] + take)
        if not chunk:
            continue
        writes = fold(chunk, store_context(store, days, today, applied))
        store.apply(writes, applied, today)
        order += [m.value for m in chunk]
        for src, last in writes.last_offset.items():
            for shard in range(store.keys.shards):
                applied[(src, shard)] = last
    return order

"""Fold messages into a store the way a worker does, batch by batch, keeping its offsets.

Store-level tests (Redis Cluster, privacy) drive the store without Kafka or a worker
process. Two ways in, as the worker has:

- :meth:`Feeder.apply` folds decoded :class:`~stream.decode.Message` lists (``fold``), for
  tests that choose each message's partition and offset (:meth:`Feeder.messages`) or
  replay a batch with stale offsets;
- :meth:`Feeder.feed` / :meth:`Feeder.apply_values` fold raw values through the worker's
  prepared path (``fold_prepared``, the compiled shortcut included), with the worker's
  cache of (user, day) pairs known in Redis and its retry of a batch refused because
  users were forgotten meanwhile.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from stream.decode import Message, Prepared
from stream.events import decode
from stream.figures import compute
from stream.fold import FoldContext, fold
from stream.stages import fold_prepared
from stream.store import scan
from stream.store.store import Forgotten, Store
from stream.timebuckets import DayMapper, ms
from tests.support import dataset as ds

#: The default STREAM_MAX_LATENESS_DAYS (400), in milliseconds.
LATENESS_MS = 400 * 86_400_000


class Feeder:
    """One worker's state over a store: `applied[(src, shard)]` is the last offset of
    `src` applied in `shard`."""

    def __init__(self, store: Store, now: datetime) -> None:
        self.store = store
        self.days = DayMapper("UTC")
        self.today = self.days.today(now)
        self.now_ms = ms(now)
        self.applied: dict[tuple[str, int], int] = {}
        self.next_offset: dict[str, int] = {}
        #: the worker's cache of (user, day) pairs known in Redis (worker.py)
        self.seen: dict[str, int] = {}
        #: batches refused because users were forgotten meanwhile
        self.refused = 0

    # -- decoded messages (fold) ------------------------------------------------------------

    def messages(self, data: ds.Dataset, partitions: int = 4) -> list[Message]:
        """The dataset as a broker would hand it over: each message in the partition of
        its topic chosen by its key (keyless ones spread round-robin), in order."""
        out = []
        next_offset: dict[str, int] = {}
        for i, (topic, key, value) in enumerate(data.messages):
            part = (zlib.crc32(key) if key else i) % partitions
            src = f"{topic}/{part}"
            offset = next_offset.get(src, 0)
            next_offset[src] = offset + 1
            out.append(Message(src, offset, decode(value, self.now_ms, LATENESS_MS), value))
        return out

    def apply(self, batch: list[Message], applied: dict[tuple[str, int], int] | None = None,
              ) -> None:
        """Fold and apply `batch` against `applied` (default: this feeder's offsets; a
        stale copy makes a redelivery, refused by the offsets' compare-and-set)."""
        applied = self.applied if applied is None else applied
        writes = fold(batch, self.context(applied, seen={}))  # as `fold` alone: no cache
        self.store.apply(writes, applied, self.today)
        self._advance(writes.last_offset)

    # -- raw values (the prepared path) -----------------------------------------------------

    def feed(self, values: list[bytes | None], batch: int = 500) -> None:
        for i in range(0, len(values), batch):
            self.apply_values([(v, None) for v in values[i:i + batch]])

    def apply_values(self, chunk: list[tuple[bytes | None, tuple[str, int] | None]]) -> None:
        """Each value at the next offset of one partition (the oracle's order), or at
        the given (src, offset): a redelivery."""
        by_src: dict[str, list[tuple[bytes | None, int]]] = {}
        for value, at in chunk:
            if at is None:
                src = "t/0"
                offset = self.next_offset.get(src, 0)
                self.next_offset[src] = offset + 1
            else:
                src, offset = at
            by_src.setdefault(src, []).append((value, offset))
        values: list[bytes | None] = []
        offsets: list[int] = []
        runs = []
        for src, items in by_src.items():
            runs.append((src, len(values), len(values) + len(items)))
            values += [v for v, _ in items]
            offsets += [o for _, o in items]
        prepared = Prepared(values, offsets, runs, self.now_ms, LATENESS_MS)
        writes = fold_prepared(prepared, self.context())
        try:
            self.store.apply(writes, self.applied, self.today)
        except Forgotten:
            # as a worker does: forget `seen` and fold the same messages again, the
            # store's cache now empty (one shard here: nothing of the batch was applied)
            assert self.store.keys.shards == 1
            self.refused += 1
            self.seen.clear()
            writes = fold_prepared(prepared, self.context())
            self.store.apply(writes, self.applied, self.today)
        self.seen.update(writes.new_days)
        self._advance(writes.last_offset)

    # -- both -------------------------------------------------------------------------------

    def context(self, applied: dict[tuple[str, int], int] | None = None,
                seen: dict[str, int] | None = None) -> FoldContext:
        """The fold's context as the worker builds it (worker.py `_context`), against
        `applied` and `seen` (default: this feeder's)."""
        store = self.store
        return FoldContext(store.keys, self.days, self.today,
                           self.applied if applied is None else applied,
                           self.seen if seen is None else seen,
                           user_ids=store.user_ids, segments=store.segments)

    def _advance(self, last_offset: dict[str, int]) -> None:
        """After a batch applied: its last offset of each source in every shard (a
        worker's offsets never go back)."""
        for src, last in last_offset.items():
            for shard in range(self.store.keys.shards):
                self.applied[(src, shard)] = max(self.applied.get((src, shard), -1), last)

    def figures(self, *, previous: bool = False, scanned: bool = False) -> dict[str, Any]:
        """Today's figures; with `previous`, the previous-day family too; with `scanned`,
        after a user scan (the figures it saves: days active, lifecycle)."""
        if scanned:
            scan.scan_and_save(self.store, self.today)
        return compute(self.store.read(self.today, previous=previous))

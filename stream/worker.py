"""The worker: Kafka batches -> decode -> fold -> Redis, with dead letters and offsets.

The hot path is batch-first: `getmany` hands over up to `batch_max` messages, each is
decoded by msgspec, the whole batch is folded into grouped writes, and the store applies
them in one round trip together with the batch's offsets. Kafka's committed offsets are
only a hint; the offsets stored in Redis (atomically with the writes) are the truth, and
a partition is resumed from them when it is assigned.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from typing import Any

import redis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from . import usermap
from .decode import Message, Prepared, decode
from .events import PROCESSING_ERROR, DeadLetter
from .fold import FoldContext, fold
from .formats import Mapper
from .kafka import offsetrange
from .kafka.deadletters import DeadLetterSink
from .kafka.source import Run, Source
from .keys import KeySpace
from .metrics.health import Health
from .settings import Settings
from .stages import fold_prepared
from .store.store import Conflict, Store
from .store.wire import BatchWrites
from .timebuckets import SYSTEM_CLOCK, Clock, DayMapper, ms
from .usermap import UserTable

log = logging.getLogger("stream.worker")

#: Redis errors worth waiting out (the server is down, restarting, loading or failing over).
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
             redis.exceptions.BusyLoadingError, redis.exceptions.TryAgainError,
             redis.exceptions.ClusterDownError, redis.exceptions.MovedError,
             redis.exceptions.AskError, redis.exceptions.ReadOnlyError,
             redis.exceptions.MasterDownError, redis.exceptions.OutOfMemoryError, OSError)
#: While idle, how often the worker checks that Redis still holds the offsets it applied.
OFFSET_AUDIT_SECONDS = 5.0
#: Users whose latest recorded (user, day) is remembered, at most (~150 bytes each); then
#: the memory is reset.
SEEN_LIMIT = 150_000
#: Longest time `Worker.process` keeps taking buffered batches before returning to the
#: main loop (lag, commits, shutdown and rebalances are handled between calls).
PROCESS_SLICE_SECONDS = 1.0
#: Longest wait for an already buffered batch while Redis applies the current one.
FETCH_AHEAD_WAIT_SECONDS = 0.05


#: A batch between fetch and apply: per partition (message count, last offset), the
#: prepared values, the local day, and the writes once folded (None: not yet).
_Batch = tuple[dict[tuple[str, int], tuple[int, int]], Prepared, int, BatchWrites | None]


def src_of(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class Worker:
    """Consumes, folds and applies until `stop` is set; see `run`."""

    def __init__(self, settings: Settings, store: Store, source: Source,
                 producer: AIOKafkaProducer, health: Health, days: DayMapper | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        """`days` and `clock` are the ones the command built at start (`app.run_worker`,
        `backfill`); without `days`, one for `settings.timezone`."""
        self.settings = settings
        self.store = store
        self.keys: KeySpace = store.keys
        self.days = days if days is not None else DayMapper(settings.timezone)
        self.clock = clock
        self.source = source
        self.producer = producer
        self.health = health
        self.applied: dict[tuple[str, int], int] = {}
        #: user_id -> a day whose activity of the user is in Redis (a cache: skipping a
        #: known (user, day) saves its writes; most repeats are the same user and day)
        self.seen: UserTable = usermap.new_table()
        #: user_id -> (shard, bucket), the fold's placement cache (FoldContext.places)
        self._places: dict[str, tuple[int, int]] = {}
        self._lock = asyncio.Lock()
        self._srcs: dict[tuple[str, int], str] = {}
        self._done: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset done
        self._committed: dict[tuple[str, int], int] = {}
        # Partitions between on_assigned and on_revoked. aiokafka's assignment() keeps
        # the old partitions until a rebalance ends; lag is only reported for these.
        self._owned: set[tuple[str, int]] = set()
        self._last_commit = 0.0
        self._lateness_ms = settings.max_lateness_days * 86_400_000
        #: topic -> mapper of its format (contract section 5), for the non-native topics
        #: met so far
        self._formats: dict[str, Mapper] = {}
        self._stop: asyncio.Event | None = None
        self._audited_at = time.monotonic()
        self._redis_failed = False
        self.dead_letters = DeadLetterSink(producer, settings, health, source,
                                           self._between_dead_letter_attempts)
        self._ends_checked: dict[tuple[str, int], tuple[int, int]] = {}
        #: Seeks made so far, and per partition the count at its latest seek: see
        #: `_since_seek`.
        self._seeks = 0
        self._sought: dict[tuple[str, int], int] = {}

    # -- partition lifecycle --------------------------------------------------------------
    async def on_assigned(self, assigned: set[tuple[str, int]]) -> None:
        """Resume each new partition from the offsets stored in Redis (the truth), not
        Kafka's committed offset, which may be ahead of a Redis that lost its last writes."""
        async with self._lock:
            self._owned |= assigned
            await self._resume(assigned)
            self.health.set_ready(assigned=bool(self.source.assignment()))

    async def _resume(self, partitions: set[tuple[str, int]]) -> None:
        if not partitions:
            return
        srcs = {src_of(t, p): (t, p) for t, p in partitions}
        loaded = await self._redis(self.store.load_offsets, list(srcs))
        for key in [k for k in self.applied if k[0] in srcs]:
            del self.applied[key]
        self.applied.update(loaded)
        # Offsets outside the log Kafka holds (deleted unread, or a recreated topic) are
        # moved in Redis first, counted and logged (see offsetrange).
        moved = await offsetrange.reconcile(self.source, self.store, self.applied, srcs,
                                            self._redis)
        for src, (t, p) in srcs.items():
            resume = moved.get(src, self.store.resume_offset(self.applied, src))
            if resume is None:
                # Nothing of it is in Redis (new, or Redis lost it all): read the partition
                # from its start, whatever Kafka's committed offset says. Offset 0 is reset
                # to the earliest one kept when older messages were deleted.
                resume = 0
            self.source.seek(t, p, resume)
            self._mark_sought(t, p)
            self._done[(t, p)] = resume - 1
            log.info("partition %s resumes at offset %d (from Redis)", src, resume)

    async def _check_log_ends(self) -> None:
        """A partition whose fetch highwater is below the offset it is at may have a log
        that ends below the offsets in Redis (its topic was deleted and created again):
        confirmed with a fresh fetch (a stale highwater is not enough), it starts over
        from its log start (see offsetrange). Each suspicion is checked once."""
        suspects: dict[str, tuple[str, int]] = {}
        for t, p in self.source.assignment() & self._owned:
            high, done = self.source.highwater(t, p), self._done.get((t, p))
            if high is None or done is None or high > done or (
                    self._ends_checked.get((t, p)) == (done, high)):
                continue
            self._ends_checked[(t, p)] = (done, high)
            suspects[src_of(t, p)] = (t, p)
        if not suspects:
            return
        moved = await offsetrange.reconcile(self.source, self.store, self.applied, suspects,
                                            self._redis, check_end=True)
        for src, offset in moved.items():
            t, p = suspects[src]
            self.source.seek(t, p, offset)
            self._mark_sought(t, p)
            self._done[(t, p)] = offset - 1

    async def on_revoked(self, revoked: set[tuple[str, int]]) -> None:
        """Finish the batch in flight (the lock), commit, then let the partitions go."""
        async with self._lock:
            await self._commit(force=True)
            self._owned -= revoked
            for t, p in revoked:
                self._done.pop((t, p), None)
                self._committed.pop((t, p), None)
                self.health.forget_partition(t, p)

    # -- main loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then finish the batch in flight and commit."""
        self._stop = stop
        await self._redis(self.store.load_scripts)
        await self._redis(self.store.check_meta)
        self.health.set_ready(redis_ok=True)
        await self.source.start(self.on_assigned, self.on_revoked)
        try:
            while not stop.is_set():
                records = await self.source.getmany(self.settings.batch_wait_ms,
                                                    self.settings.batch_max)
                handed = self._seeks
                async with self._lock:
                    records = self._since_seek(records, handed)
                    if records:
                        await self.process(records)
                    elif time.monotonic() - self._audited_at >= OFFSET_AUDIT_SECONDS:
                        await self._audit_offsets()
                    self._update_lag()
                    await self._check_log_ends()
                    await self._commit()
            async with self._lock:
                await self._commit(force=True)
        finally:
            await self.source.stop()

    def _mark_sought(self, topic: str, partition: int) -> None:
        self._seeks += 1
        self._sought[(topic, partition)] = self._seeks

    def _since_seek(self, records: list[Run], handed: int) -> list[Run]:
        """`records` without the runs of partitions sought after `getmany` handed them
        over (`handed`: the seek count then). Those were read from the position before the
        seek: while a slow assignment callback runs, the client reads from Kafka's
        committed offset, which is ahead of Redis's when Redis lost writes the group had
        committed, and applying them would skip the messages between. The client reads
        them again from the seek."""
        if not records or not self._sought:
            return records
        kept = [r for r in records if self._sought.get((r[0], r[1]), 0) <= handed]
        if len(kept) < len(records):
            log.info("%d partitions' records fetched before their seek dropped (read "
                     "again from the seek)", len(records) - len(kept))
        return kept

    async def _audit_offsets(self) -> None:
        """While idle, check that Redis still holds the offsets this worker applied. A
        Redis restarted from an older AOF or snapshot, or failed over to a lagging replica,
        lost them, and no batch would notice (by its compare-and-set) until the partition
        gets new messages: re-read from the offsets Redis holds."""
        self._audited_at = time.monotonic()
        assigned = self.source.assignment()
        if not assigned:
            return
        srcs = {src_of(t, p) for t, p in assigned}
        stored = await self._redis(self.store.load_offsets, sorted(srcs))
        mine = {k: v for k, v in self.applied.items() if k[0] in srcs}
        if stored != mine:
            log.warning("offsets in Redis are not those this worker applied (Redis lost "
                        "writes, or another worker moved on); resuming from Redis's")
            self.seen.clear()
            await self._resume(assigned)

    async def process(self, records: list[Run]) -> None:
        """Decode, fold and apply `records`, then any records the client has buffered
        meanwhile (for up to PROCESS_SLICE_SECONDS); retries Redis until it succeeds.

        While Redis applies one batch, the next buffered batch is fetched, decoded and
        folded, so the worker's Python and Redis work at the same time. Folding ahead is
        safe: the next batch is folded against the offsets as they will be once the
        current one is applied, and Redis compares exactly those when it is applied (a
        conflict if the current one was not); the (user, day) pairs it may repeat from
        the batch in flight are idempotent writes."""
        until = time.monotonic() + PROCESS_SLICE_SECONDS
        batch = self._prepare(records)
        while batch is not None:
            runs, prepared, today, writes = batch
            started = time.perf_counter()
            batch = None
            ahead = self._stop is None or not self._stop.is_set()
            ok, batch = await self._apply(prepared, today, writes,
                                          ahead and time.monotonic() < until)
            if not ok:
                return
            self.health.apply_seconds.observe(time.perf_counter() - started)
            self.health.batch_size.observe(len(prepared.values))
            per_topic: dict[str, int] = {}
            done = self._done
            for (topic, partition), (count, last) in runs.items():
                per_topic[topic] = per_topic.get(topic, 0) + count
                if done.get((topic, partition), -1) < last:
                    done[(topic, partition)] = last
            for topic, n in per_topic.items():
                self.health.processed.labels(topic).inc(n)
            self.health.folded(len(prepared.values))

    def _prepare(self, got: list[Run]) -> _Batch | None:
        """A batch ready to fold: per kept partition (message count, last offset), the
        values and offsets in runs of one partition each, and the local day."""
        assigned = self.source.assignment()
        srcs = self._srcs
        values: list[bytes | None] = []
        offsets: list[int] = []
        runs: list[tuple[str, int, int]] = []
        counts: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition, run_values, run_offsets in got:
            tp = (topic, partition)
            # Records of a partition revoked while we waited belong to its new owner now.
            if tp not in assigned or not run_offsets:
                continue
            count, last = counts.get(tp, (0, -1))
            if run_offsets[0] <= last:
                # A message this batch holds already (a source re-reading after a seek can
                # hand a partition's messages over twice in one batch): the fold checks
                # offsets against those applied before the batch, not within it, so each
                # (partition, offset) must come once, or its counts would be added twice.
                keep = bisect.bisect_right(run_offsets, last)
                if keep == len(run_offsets):
                    continue
                run_values, run_offsets = run_values[keep:], run_offsets[keep:]
            src = srcs.get(tp)
            if src is None:
                src = srcs[tp] = src_of(*tp)
                mapper = self.settings.format_of(topic)
                if mapper is not None:
                    self._formats[topic] = mapper
            runs.append((src, len(values), len(values) + len(run_offsets)))
            values += run_values
            offsets += run_offsets
            counts[tp] = (count + len(run_offsets), run_offsets[-1])
        if not values:
            return None
        now = self.clock.now()
        prepared = Prepared(values, offsets, runs, ms(now), self._lateness_ms,
                            self._formats or None)
        return counts, prepared, self.days.today(now), None

    async def _apply(self, prepared: Prepared, today: int,
                     writes: BatchWrites | None = None, ahead: bool = False) -> tuple[
        bool, _Batch | None
    ]:
        """Apply the batch (folded already when `writes` is given). False when it was
        dropped to be re-read (offset conflict). With `ahead`, the next buffered batch is
        fetched, decoded and folded while Redis works, and returned."""
        nxt = None
        try:
            if writes is None:
                writes = fold_prepared(prepared, self._context(today, self.applied, self.seen))
            if writes.dead:
                await self._dead_letter(writes.dead)
            applying = asyncio.ensure_future(
                self._redis(self.store.apply, writes, self.applied, today))
            try:
                if ahead:
                    nxt = await self._fold_ahead(writes)
            finally:
                await applying
        except Conflict as exc:
            log.warning("%s; reloading offsets from Redis and re-reading", exc)
            self.seen.clear()
            await self._resume(self.source.assignment())
            return False, None
        except _GiveUp:
            raise
        except Exception:
            log.exception("batch of %d messages failed; retrying message by message",
                          len(prepared.values))
            try:
                await self._one_by_one(decode(prepared), today)
            except Conflict as exc:  # raised in this handler, the clause above misses it
                log.warning("%s; reloading offsets from Redis and re-reading", exc)
                self.seen.clear()
                await self._resume(self.source.assignment())
                return False, None
            return True, nxt
        self._applied_through(writes.last_offset)
        if len(self.seen) > SEEN_LIMIT:
            self.seen.clear()
        self.seen.update(writes.new_days)
        return True, nxt

    async def _fold_ahead(self, current: BatchWrites) -> _Batch | None:
        """The next batch, if the client has one buffered, decoded and folded (not folded
        if folding fails: `_apply` then folds it again and handles the error)."""
        try:
            # A client in the middle of a rebalance waits for the new assignment, which
            # waits for this batch (the lock): give up quickly then.
            records = await asyncio.wait_for(
                self.source.getmany(0, self.settings.batch_max), FETCH_AHEAD_WAIT_SECONDS)
        except (KafkaError, TimeoutError) as exc:
            log.debug("fetch ahead skipped: %r", exc)
            return None
        batch = self._prepare(records) if records else None
        if batch is None:
            return None
        runs, prepared, today, _ = batch
        # This batch is applied only once the batch in flight is (or never): fold it on top
        # of the offsets Redis holds then, not on `applied`, which lacks them still. Its
        # messages are not always above the batch in flight: records handed over before a
        # seek (a slow assignment callback) may be followed by the same offsets read again
        # from the seek, and folded against the older offsets those would be applied twice
        # (store.apply compares the offsets a batch was folded against).
        after = dict(self.applied)
        for src, offset in current.last_offset.items():
            for shard in range(self.keys.shards):
                if after.get((src, shard), -1) < offset:
                    after[(src, shard)] = offset
        # Pairs of the batch in flight are not in `seen` yet: repeating them costs a
        # no-op write, never a wrong one.
        try:
            writes = fold_prepared(prepared, self._context(today, after, self.seen))
        except Exception:
            return runs, prepared, today, None
        return runs, prepared, today, writes

    def _context(self, today: int, applied: dict[tuple[str, int], int],
                 seen: UserTable) -> FoldContext:
        """What the fold of one batch reads: built per batch (never per message), from
        the worker's long-lived state."""
        store = self.store
        return FoldContext(self.keys, self.days, today, applied, seen, 0, store.user_ids,
                           store.segments, self._places)

    async def _one_by_one(self, messages: list[Message], today: int) -> None:
        """Isolate a message that makes the fold fail (a bug, or data Redis refuses) and
        dead-letter it, so one poisoned message never stops the partition."""
        for m in messages:
            try:
                writes = fold([m], self._context(today, self.applied, self.seen))
                if writes.dead:
                    await self._dead_letter(writes.dead)
                await self._redis(self.store.apply, writes, self.applied, today)
            except (Conflict, _GiveUp):
                raise
            except Exception as exc:
                log.exception("message %s@%d dead-lettered as %s", m.src, m.offset,
                              PROCESSING_ERROR)
                bad = Message(m.src, m.offset,
                              DeadLetter(PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"[:500]),
                              m.value)
                writes = fold([bad], self._context(today, self.applied, {}))
                await self._dead_letter(writes.dead)
                await self._redis(self.store.apply, writes, self.applied, today)
            self._applied_through(writes.last_offset)

    def _applied_through(self, last: dict[str, int]) -> None:
        for src, offset in last.items():
            for shard in range(self.keys.shards):
                if self.applied.get((src, shard), -1) < offset:
                    self.applied[(src, shard)] = offset

    async def _dead_letter(self, dead: list[Message]) -> None:
        """Produce `dead` through the dead-letter sink and wait until the broker has them
        all (`DeadLetterSink.produce`): called before the batch is applied, since once
        Redis holds its offsets these messages are never read again."""
        await self.dead_letters.produce(dead)

    def _between_dead_letter_attempts(self) -> None:
        """Run by the sink after each refused attempt: give up when stopping; otherwise
        the lag stays true meanwhile, so the stall watchdog sees that nothing moves."""
        if self._stop is not None and self._stop.is_set():
            raise _GiveUp("stopping while the dead-letter topic is unavailable")
        self._update_lag()

    async def _redis(self, fn: Any, *args: Any) -> Any:
        """Call the sync store in a thread; wait out transient Redis errors with backoff
        (0.1 s doubling to 5 s), never skipping the batch."""
        delay = 0.1
        while True:
            try:
                result = await asyncio.to_thread(fn, *args)
            except TRANSIENT as exc:
                if self._stop is not None and self._stop.is_set():
                    raise _GiveUp("stopping while Redis is unavailable") from exc
                self.health.redis_errors.inc()
                self.health.set_ready(redis_ok=False)
                self._redis_failed = True
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._redis_failed:
                self._redis_failed = False
                log.info("Redis reachable again")
            self.health.set_ready(redis_ok=True)
            return result

    def _update_lag(self) -> None:
        total = 0
        for (t, p) in self.source.assignment() & self._owned:
            high = self.source.highwater(t, p)
            if high is None:
                continue
            done = self._done.get((t, p))
            lag = max(0, high - (done + 1 if done is not None else 0))
            self.health.set_lag(t, p, lag)
            total += lag
        self.health.set_total_lag(total)

    async def _commit(self, force: bool = False) -> None:
        """Commit progress to Kafka at most once a second (Redis holds the truth, Kafka's
        offsets only save re-reading after a restart)."""
        now = time.monotonic()
        if not force and now - self._last_commit < 1.0:
            return
        pending = {k: v + 1 for k, v in self._done.items() if self._committed.get(k) != v + 1}
        pending = {k: v for k, v in pending.items() if k in self.source.assignment()}
        if not pending:
            return
        try:
            await self.source.commit(pending)
            self._committed.update(pending)
            self._last_commit = now
        except Exception as exc:  # a rebalance in progress; the next commit catches up
            log.info("commit skipped: %s", exc)


class _GiveUp(Exception):
    """Stop retrying (shutdown requested while Redis is unavailable)."""

"""`backfill`: replay a topic's history into the store, idempotently, beside the live group.

1. A consumer without a group (manual assignment) reads every partition of the topics:
   the live consumer group is never joined or rebalanced, and its committed offsets are
   never touched.
2. The end of each partition is its fetch highwater when the backfill starts (messages
   produced later are the live worker's); the start is `--from-offset N` (the same N on
   every partition) or the first message whose Kafka timestamp is at or after
   `--from-time` (ListOffsets by time; a broker that cannot answer it, such as the
   embedded Tansu, is scanned from the beginning instead, skipping older messages).
3. The records go through the worker's own batch path (`consumer.Worker`: decode -> fold
   -> store.apply with their offsets, dead letters produced first), so a partition
   resumes after the offsets already applied in Redis: re-running changes nothing, and
   a message at or below them would be skipped anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from .kafka.fetched import Origin
from .kafka.source import RecentOrigins, Record, Run, records_origins, runs_of
from .metrics.health import Health
from .settings import Settings
from .store.store import Store
from .timebuckets import ms
from .worker import Worker, _GiveUp

log = logging.getLogger("stream.backfill")

TP = tuple[str, int]


class BackfillError(Exception):
    """A backfill that cannot start (an unknown topic...); the message is one line."""


@dataclass(slots=True)
class Progress:
    """Where a backfill stands: messages to read (once every end is known) and read."""

    partitions: int = 0
    total: int | None = None
    done: int = 0
    skipped_by_time: int = 0
    finished: bool = False
    started_at: float = field(default_factory=time.monotonic)


class BackfillSource:
    """The worker's `Source` over a group-less consumer from given starts to fixed ends.

    Sets `stop` once every partition has been handed over up to its end; commits are
    no-ops (there is no group), and a seek (the worker resuming from Redis's offsets) never
    goes below the requested start."""

    def __init__(self, settings: Settings, topics: Iterable[str], stop: asyncio.Event,
                 from_offset: int | None = None, from_time: datetime | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        if (from_offset is None) == (from_time is None):
            raise ValueError("exactly one of from_offset and from_time")
        self._settings = settings
        self._topics = list(dict.fromkeys(topics))
        self._stop = stop
        self._from_offset = from_offset
        self._from_ms = None if from_time is None else ms(from_time)
        self._on_progress = on_progress
        self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_max,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            **settings.kafka_options(),
        )
        self._tps: list[TopicPartition] = []
        self.start_at: dict[TP, int] = {}  # requested start
        self.end: dict[TP, int] = {}  # fetch highwater at start: read up to end - 1
        self.pos: dict[TP, int] = {}  # next offset to hand over
        self._base: dict[TP, int] = {}  # where progress counts from
        self._min_ts: dict[TP, int] = {}  # scan mode: skip messages older than this
        self._done: set[TP] = set()
        self.progress = Progress()
        self._recent = RecentOrigins()

    # -- Source ----------------------------------------------------------------------------
    async def start(self, on_assigned: Any, on_revoked: Any) -> None:
        await self._consumer.start()
        try:
            await self._consumer.topics()  # fresh metadata
            for topic in self._topics:
                parts = self._consumer.partitions_for_topic(topic)
                if not parts:
                    raise BackfillError(f"topic {topic!r} does not exist on the brokers")
                self._tps += [TopicPartition(topic, p) for p in sorted(parts)]
            self._consumer.assign(self._tps)
            await self._learn_ends()
            await self._seek_starts()
        except BaseException:
            await self._consumer.stop()  # the worker stops only a source that started
            raise
        self.progress.partitions = len(self._tps)
        await on_assigned({(tp.topic, tp.partition) for tp in self._tps})
        # The worker sought each partition past what Redis already holds: count from there.
        self._base = dict(self.pos)
        self._check_done()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]:
        self._report()
        if self._stop.is_set():
            return []
        data = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, msgs in data.items():
            key = (tp.topic, tp.partition)
            end = self.end[key]
            min_ts = self._min_ts.get(key)
            for m in msgs:
                if m.offset >= end or key in self._done:
                    break
                self.pos[key] = m.offset + 1
                if min_ts is not None and m.timestamp < min_ts:
                    self.progress.skipped_by_time += 1
                    continue
                out.append(Record(tp.topic, tp.partition, m.offset, m.key, m.value))
            if key not in self._done:
                # the position skips what records do not show (transaction markers)
                self.pos[key] = max(self.pos[key], await self._consumer.position(tp))
        self._recent.add([records_origins(tp.topic, tp.partition, msgs)
                          for tp, msgs in data.items() if msgs])
        self._check_done()
        return runs_of(out)

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        return self._recent.lookup(topic, partition, offsets)

    def highwater(self, topic: str, partition: int) -> int | None:
        return self.end.get((topic, partition))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        offset = max(offset, self.start_at[key])
        self.pos[key] = offset
        if offset < self.end[key]:
            self._consumer.seek(TopicPartition(topic, partition), offset)

    async def commit(self, offsets: dict[TP, int]) -> None:
        """No group, nothing to commit: the applied offsets live in Redis."""

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self._tps}

    # -- internals ---------------------------------------------------------------------------
    async def _learn_ends(self) -> None:
        """The fetch highwater of every partition, from a first small fetch (ListOffsets
        "latest" is answered wrongly by some brokers). What it reads is dropped: each
        partition is sought to its start next, which discards fetched data."""
        await self._consumer.seek_to_beginning(*self._tps)
        deadline = time.monotonic() + 60
        while True:
            await self._consumer.getmany(*self._tps, timeout_ms=200, max_records=1)
            marks = {tp: self._consumer.highwater(tp) for tp in self._tps}
            if all(m is not None for m in marks.values()):
                break
            if time.monotonic() > deadline:
                raise BackfillError("no fetch highwater from the brokers within 60 s")
        for tp, mark in marks.items():
            self.end[(tp.topic, tp.partition)] = int(mark or 0)

    async def _seek_starts(self) -> None:
        found: dict[TopicPartition, Any] = {}
        from_ms = self._from_ms if self._from_ms is not None else -1
        if self._from_ms is not None:
            found = await self._consumer.offsets_for_times(dict.fromkeys(self._tps, from_ms))
        scanned = []
        for tp in self._tps:
            key = (tp.topic, tp.partition)
            end = self.end[key]
            if self._from_offset is not None:
                start = min(self._from_offset, end)
            else:
                answer = found.get(tp)
                if answer is None:  # no message at or after the time
                    start = end
                elif answer.timestamp >= from_ms and 0 <= answer.offset <= end:
                    start = answer.offset
                else:  # not a real answer (Tansu: offset 0, timestamp -1): scan
                    await self._consumer.seek_to_beginning(tp)
                    start = await self._consumer.position(tp)
                    self._min_ts[key] = from_ms
                    scanned.append(f"{tp.topic}/{tp.partition}")
            self.start_at[key] = self._base[key] = self.pos[key] = start
            if start < end:
                self._consumer.seek(tp, start)
        if scanned:
            log.warning("the brokers gave no offset by time for %s: scanning from the "
                        "beginning and skipping messages with an earlier Kafka timestamp",
                        ", ".join(scanned))

    def _check_done(self) -> None:
        newly = [tp for tp in self._tps if (tp.topic, tp.partition) not in self._done
                 and self.pos[(tp.topic, tp.partition)] >= self.end[(tp.topic, tp.partition)]]
        for tp in newly:
            self._done.add((tp.topic, tp.partition))
        if newly:
            self._consumer.pause(*newly)
        if len(self._done) == len(self._tps):
            self._stop.set()

    def _report(self) -> None:
        """Progress as of the batches handed over so far (each was applied before the
        worker asked for the next one)."""
        p = self.progress
        p.total = sum(max(0, self.end[k] - self._base[k]) for k in self.end)
        p.done = sum(max(0, min(self.pos[k], self.end[k]) - self._base[k]) for k in self.end)
        if self._on_progress is not None:
            self._on_progress(p)


async def run_backfill(settings: Settings, store: Store, topics: Iterable[str], *,
                       from_offset: int | None = None, from_time: datetime | None = None,
                       on_progress: Callable[[Progress], None] | None = None,
                       stop: asyncio.Event | None = None) -> Progress:
    """Replay `topics` from the start given up to their highwaters at start into `store`.

    Returns the final progress (`finished` False when `stop` was set from outside, e.g.
    by a signal: what was applied stays, and a re-run continues from there)."""
    done = asyncio.Event()
    outer = stop or asyncio.Event()
    source = BackfillSource(settings, topics, done, from_offset=from_offset,
                            from_time=from_time, on_progress=on_progress)
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **settings.kafka_options())
    await producer.start()
    worker = Worker(settings, store, source, producer,
                    Health(CollectorRegistry(), settings.stall_seconds))
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

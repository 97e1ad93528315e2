"""Offsets out of range: a partition whose offset stored in Redis lies outside the log
Kafka holds for it.

- **Below the log start** (retention or a DeleteRecords removed messages nobody had read,
  e.g. while every worker was down): the messages between the stored offset and the log
  start are gone. Found when the partition is resumed (ListOffsets, earliest): it resumes
  at the log start; how many were skipped is logged and added to
  `engagement_offset_skipped_messages_total{topic}`.
- **Above the log end** (the topic was deleted and created again, or its log was lost):
  the stored offsets belong to a log that no longer exists, and resuming there would
  silently ignore every message of the new log below them. Suspected when the consumer's
  fetch highwater is below the offset the partition is at, confirmed by a fresh fetch at
  the stored offset by a short-lived consumer without a group (a stale highwater is not
  enough; ListOffsets "latest" is not used, some Kafka-protocol brokers answer it
  wrongly): the fetch fails with "offset out of range" (Kafka) or reports a highwater
  below the offset. The partition starts over: its stored offsets are deleted and it is
  read from its log start; this is logged and counted in
  `engagement_partition_restarts_total{topic}`.

Each move of the stored offsets and its count are one atomic step in Redis
(`lua/offsets.lua`), compare-and-set like a batch's apply, so a worker that crashes after
it leaves nothing to count twice: the next owner finds the offsets in range.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..settings import Settings
from ..store import wire
from ..store.store import Store
from .config import KafkaConfig

log = logging.getLogger("stream.worker")

#: Totals-hash field prefixes (`<prefix><topic>`): the field grammar's (stream/store/wire.py).
SKIPPED = wire.SKIPPED_PREFIX
RESTARTS = wire.RESTARTS_PREFIX
#: Longest wait for the fetch that finds each partition's log end.
PROBE_SECONDS = 5.0

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where a partition resumes: `seek`, with `skipped` messages lost to the log start
    or `restarted` when its log ends below the stored offsets."""

    seek: int
    skipped: int = 0
    restarted: bool = False


def judge(resume: int, start: int, past_end: bool) -> Verdict:
    """`resume`: one past the lowest offset applied in every shard; `start`: the log
    start; `past_end`: the log ends below the highest stored offset + 1."""
    if past_end:
        return Verdict(seek=start, restarted=True)
    if resume < start:
        return Verdict(seek=start, skipped=start - resume)
    return Verdict(seek=resume)


async def probe(settings: Settings, targets: Mapping[TP, int], fetch_end: bool = True,
                seconds: float = PROBE_SECONDS) -> dict[TP, tuple[int, int | None, bool]]:
    """Per partition of `targets` (partition -> the highest offset it may be at): (log
    start, highwater when known, whether the log ends before the target). Without
    `fetch_end` only the log starts are asked for (the end is not judged)."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none", fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=64 * 1024,
                                **KafkaConfig.from_settings(settings).aiokafka())
    await consumer.start()
    try:
        tps = {TopicPartition(*tp): off for tp, off in targets.items()}
        consumer.assign(list(tps))
        starts = await consumer.beginning_offsets(list(tps))
        out: dict[TP, tuple[int, int | None, bool]] = {}
        pending = []
        for tp, target in tps.items():
            start = int(starts[tp])
            if target <= start or not fetch_end:
                # At or below the start: nothing to fetch, the end is not in question.
                out[(tp.topic, tp.partition)] = (start, None, False)
            else:
                consumer.seek(tp, target)
                pending.append(tp)
        deadline = time.monotonic() + seconds
        while pending and time.monotonic() < deadline:
            try:
                await consumer.getmany(*pending, timeout_ms=100, max_records=1)
            except OffsetOutOfRangeError as exc:
                for tp in exc.args[0] if exc.args and isinstance(exc.args[0], dict) else ():
                    if tp in pending:
                        out[(tp.topic, tp.partition)] = (int(starts[tp]), None, True)
                        pending.remove(tp)
                consumer.pause(*[tp for tp in tps if tp not in pending])
                continue
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None:
                    out[(tp.topic, tp.partition)] = (int(starts[tp]), int(high),
                                                     int(high) < tps[tp])
                    pending.remove(tp)
        for tp in pending:  # no answer in time: assume in range (the old behaviour)
            log.warning("partition %s/%d: no fetch answer within %.0fs; its log end was "
                        "not checked", tp.topic, tp.partition, seconds)
            out[(tp.topic, tp.partition)] = (int(starts[tp]), None, False)
        return out
    finally:
        await consumer.stop()


def move(store: Store, applied: MutableMapping[tuple[str, int], int], src: str,
         verdict: Verdict) -> bool:
    """Move `src`'s stored offsets in every shard as `verdict` says, counting it once,
    and update `applied` to match. False when another worker moved them meanwhile
    (nothing of that shard is written; the caller resumes from what Redis holds)."""
    keys = store.keys
    topic = src.rpartition("/")[0]
    counted = False
    for shard in range(keys.shards):
        expected = applied.get((src, shard), -1)
        if verdict.restarted:
            new, field, n = -1, RESTARTS + topic, 1
            if expected < 0:
                continue
        else:
            new, field, n = verdict.seek - 1, SKIPPED + topic, verdict.skipped
            if expected >= new:
                continue
        result = store.scripts.call("offsets", [keys.offsets(shard), keys.totals(shard)],
                                    src, expected, new, field, 0 if counted else n)
        if not wire.decode_offset_move(result).moved:
            return False
        counted = True
        if new < 0:
            applied.pop((src, shard), None)
        else:
            applied[(src, shard)] = new
    return True


async def reconcile(source: Any, store: Store,
                    applied: MutableMapping[tuple[str, int], int], srcs: Mapping[str, TP],
                    call: Callable[..., Awaitable[Any]], check_end: bool = False
                    ) -> dict[str, int]:
    """Check the partitions `srcs` (src -> (topic, partition)) whose offsets `applied`
    (loaded from Redis) holds against the logs Kafka holds, through the `source`'s
    `log_ranges` (a source without one is not checked): their log starts, and with
    `check_end` their log ends too (a fetch each). Move the out-of-range ones (through
    `call`, the worker's retrying Redis call) and return where each of those resumes.
    Partitions in range are left alone (not in the result)."""
    log_ranges = getattr(source, "log_ranges", None)
    if log_ranges is None:
        return {}
    shards = store.keys.shards
    targets: dict[TP, tuple[str, int]] = {}
    for src, tp in srcs.items():
        stored = [v for s in range(shards) if (v := applied.get((src, s))) is not None]
        if stored:
            targets[tp] = (src, max(stored) + 1)
    if not targets:
        return {}
    try:
        ranges = await asyncio.wait_for(
            log_ranges({tp: ceiling for tp, (_, ceiling) in targets.items()}, check_end),
            PROBE_SECONDS + 10)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("could not check the stored offsets against the logs (%r); resuming "
                    "from Redis's offsets", exc)
        return {}
    out: dict[str, int] = {}
    for tp, (src, ceiling) in targets.items():
        if tp not in ranges:
            continue
        start, high, past_end = ranges[tp]
        resume = store.resume_offset(applied, src)
        verdict = judge(ceiling if resume is None else resume, start, past_end)
        if not verdict.restarted and not verdict.skipped:
            continue
        if not await call(move, store, applied, src, verdict):
            log.warning("partition %s: stored offsets moved by another worker while being "
                        "checked; resuming from Redis's", src)
            continue
        if verdict.restarted:
            log.error("partition %s starts over from offset %d: its log ends at %s, below "
                      "offset %d already applied (the topic was deleted and created again, "
                      "or its log was lost); counted in engagement_partition_restarts_total",
                      src, verdict.seek, "?" if high is None else high, ceiling - 1)
        else:
            log.error("partition %s: %d messages (offsets %d-%d) were deleted by the broker "
                      "before they were read (retention); resuming at the log start %d; "
                      "counted in engagement_offset_skipped_messages_total", src,
                      verdict.skipped, verdict.seek - verdict.skipped, verdict.seek - 1,
                      verdict.seek)
        out[src] = verdict.seek
    return out


class OffsetRangeCollector(Collector):
    """`engagement_offset_skipped_messages_total{topic}` and
    `engagement_partition_restarts_total{topic}`: totals over all workers, read from
    Redis (every configured topic exported, 0 until it happens, so `increase()` sees the
    first one). A failed read exports the last values read."""

    def __init__(self, store: Store, topics: Sequence[str], cache_seconds: float = 5.0) -> None:
        self._store = store
        self._topics = list(topics)
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}
        self._read_at = -1e9

    def _read(self) -> dict[str, int]:
        fields = [p + t for p in (SKIPPED, RESTARTS) for t in self._topics]
        keys = self._store.keys
        pipe = self._store.client.pipeline(transaction=False)
        for shard in range(keys.shards):
            pipe.hmget(keys.totals(shard), fields)
        out = dict.fromkeys(fields, 0)
        for values in pipe.execute():
            for name, value in zip(fields, values, strict=True):
                if value is not None:
                    out[name] += int(value)
        return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                with contextlib.suppress(Exception):  # Redis down: the last values
                    self._values = self._read()
                    self._read_at = time.monotonic()
            values = dict(self._values)
        if not values:  # never read: nothing rather than zeros that would look like a reset
            return
        skipped = CounterMetricFamily(
            "engagement_offset_skipped_messages",
            "Messages deleted by the broker (retention) before any worker read them, "
            "skipped when their partition resumed at the log start", labels=["topic"])
        restarts = CounterMetricFamily(
            "engagement_partition_restarts",
            "Partitions whose log ended below the offsets in Redis (topic deleted and "
            "created again) and that were read again from their start", labels=["topic"])
        for topic in self._topics:
            skipped.add_metric([topic], values.get(SKIPPED + topic, 0))
            restarts.add_metric([topic], values.get(RESTARTS + topic, 0))
        yield skipped
        yield restarts

"""The worker's `Source` over confluent-kafka (librdkafka), chosen by
`STREAM_KAFKA_CLIENT=confluent`.

librdkafka fetches in its own threads; the Python client hands messages over in
`consume()`, which blocks, and runs the rebalance callbacks inside that call on the
calling thread. So:

- `consume()` runs on one dedicated thread (every call on the consumer that can serve
  callbacks runs there: consume and close), never on the event loop.
- A rebalance callback bridges into the event loop: it schedules the worker's
  `on_revoked` / `on_assigned` hook there and waits for it, so no message of a partition
  flows before its resume offset (from Redis) is set. Seeks the hook makes are collected
  and passed to `assign()`, which is how librdkafka starts a partition at a chosen offset
  (eager protocol, `roundrobin`, like aiokafka's default assignor).
- A `getmany` given up by its caller (the worker's fetch ahead waits 50 ms at most) does
  not lose its messages: the consume call keeps running and the next `getmany` returns
  what it got.
- Messages of a partition that was sought or (re)assigned while a consume call was under
  way may come from before the move: they are dropped and the partition is sought again to
  where it was moved, so the worker never sees a gap.
- A batch librdkafka cannot read (it reports `_BAD_COMPRESSION` or `_BAD_MSG`, and would
  fetch the same batch for ever) is read once by the worker's own reader
  (`stream/kafka/fetched.py`, through a one-off aiokafka consumer): an unreadable batch comes
  out whole, to be dead-lettered as `unreadable_batch`, and the partition is sought past
  it, as with the default client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition, libversion

from ..settings import Settings
from . import fetched
from .config import KafkaConfig
from .fetched import Origin
from .source import OriginReader, RecentOrigins, Record, Run, chunk_origins, runs_of

log = logging.getLogger("stream.kafka")

#: How often a callback waiting for a hook checks that the event loop is still there.
HOOK_POLL_SECONDS = 0.5
#: librdkafka's errors for a batch it cannot read (it fetches it again and again).
UNREADABLE_CODES = (KafkaError._BAD_COMPRESSION, KafkaError._BAD_MSG)


class _Job:
    """One `consume()` call on the consumer thread, and the partitions moved meanwhile."""

    __slots__ = ("future", "moved")

    def __init__(self) -> None:
        self.future: asyncio.Future[list[Record]] | None = None
        self.moved: set[tuple[str, int]] = set()


class ConfluentSource:
    """`Source` over confluent-kafka's Consumer (manual commits, earliest reset)."""

    def __init__(self, settings: Settings, group: str | None = None,
                 topics: Iterable[str] | None = None) -> None:
        self._topics = list(topics or settings.topic_list)
        self._settings = settings
        self._conf = KafkaConfig.from_settings(settings).librdkafka(group)
        self._consumer: Consumer | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kafka-consume")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_assigned: Any = None
        self._on_revoked: Any = None
        # What the worker owns: set when a callback starts, so it already holds the new
        # partitions while on_assigned runs and still the old ones while on_revoked runs.
        self._assigned: frozenset[tuple[str, int]] = frozenset()
        # While on_assign waits for the hook: the offsets the hook sought, for assign().
        self._assigning: dict[tuple[str, int], int] | None = None
        self._positions: dict[tuple[str, int], int] = {}  # the last offset each was moved to
        self._job: _Job | None = None
        self._error: BaseException | None = None  # a failed on_assigned, raised by getmany
        self._recent = RecentOrigins()
        # (topic, partition) -> offset of a batch librdkafka cannot read (consumer thread);
        # and the next offset the worker is to get of each partition (event loop).
        self._unreadable: dict[tuple[str, int], int] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._settings = settings

    # -- Source -----------------------------------------------------------------------------
    async def start(self, on_assigned: Any, on_revoked: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._consumer = Consumer({**self._conf, "error_cb": _on_error})
        self._consumer.subscribe(self._topics, on_assign=self._assign_cb,
                                 on_revoke=self._revoke_cb, on_lost=self._revoke_cb)
        log.info("consuming with confluent-kafka (librdkafka %s)", libversion()[0])

    async def stop(self) -> None:
        """Leave the group (on_revoked runs, from the consumer thread) and close."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        loop = asyncio.get_running_loop()
        try:
            # Queued behind a consume call still running, if any.
            await loop.run_in_executor(self._thread, consumer.close)
        finally:
            self._thread.shutdown(wait=False)

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]:
        if self._error is not None:
            if timeout_ms == 0:  # the worker's fetch ahead: let the main loop raise it
                return []
            error, self._error = self._error, None
            raise error
        consumer = self._consumer
        if consumer is None:
            return []
        if self._unreadable and timeout_ms > 0 and self._job is None:
            # Not in the worker's fetch ahead (given up after 50 ms: this takes longer),
            # and with no consume call under way (the seeks go straight to librdkafka).
            runs = await self._read_unreadable()
            if runs:
                return runs
        job = self._job
        if job is None or (job.future is not None and job.future.cancelled()):
            job = self._job = _Job()
            job.future = asyncio.get_running_loop().run_in_executor(
                self._thread, self._consume, consumer, max_records, timeout_ms / 1000)
        assert job.future is not None
        try:
            records = await asyncio.shield(job.future)
        except asyncio.CancelledError:
            raise  # the job stays: the next call returns its messages
        except BaseException:
            self._job = None
            raise
        self._job = None
        if job.moved:
            records = self._drop_moved(records, job.moved)
        return self._handed(runs_of(records))

    def _handed(self, runs: list[Run]) -> list[Run]:
        for topic, partition, _, offsets in runs:
            self._next[(topic, partition)] = offsets[-1] + 1
        return runs

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        return self._recent.lookup(topic, partition, offsets)

    def highwater(self, topic: str, partition: int) -> int | None:
        # The fetch highwater (cached from fetch responses), not ListOffsets: some brokers
        # answer "latest" wrongly.
        if self._consumer is None:
            return None
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           cached=True)
        except KafkaException:
            return None
        return high if high is not None and high >= 0 else None

    def seek(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        with self._lock:
            self._positions[key] = offset
            self._next[key] = offset
            if self._job is not None:
                self._job.moved.add(key)
            if self._assigning is not None:
                # Inside on_assign: the offset goes into the assign() call.
                self._assigning[key] = offset
                return
        if self._consumer is not None:
            self._consumer.seek(TopicPartition(topic, partition, offset))

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        consumer = self._consumer
        if consumer is None or not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        done = await asyncio.to_thread(consumer.commit, offsets=tps, asynchronous=False)
        failed = [tp for tp in done or () if tp.error is not None]
        if failed:
            raise KafkaException(failed[0].error)

    async def log_ranges(self, targets: dict[tuple[str, int], int], fetch_end: bool) -> dict[
        tuple[str, int], tuple[int, int | None, bool]
    ]:
        """Optional part of `Source`: see `offsetrange.probe` (its own aiokafka
        consumer without a group, so librdkafka's threads are not involved)."""
        from .offsetrange import probe

        return await probe(self._settings, targets, fetch_end)

    def assignment(self) -> set[tuple[str, int]]:
        return set(self._assigned)

    # -- the consumer thread ------------------------------------------------------------------
    def _consume(self, consumer: Consumer, max_records: int, timeout: float) -> list[Record]:
        msgs = consumer.consume(max_records, timeout)
        out: list[Record] = []
        append = out.append
        for m in msgs:
            err = m.error()
            if err is None:
                append(Record(m.topic(), m.partition(), m.offset(),
                              m.key(), m.value()))
            elif err.code() in UNREADABLE_CODES and _where(m) is not None:
                topic, partition, offset = _where(m)  # type: ignore[misc]
                with self._lock:
                    known = self._unreadable.get((topic, partition))
                    self._unreadable[(topic, partition)] = offset
                if known != offset:
                    log.warning("librdkafka cannot read %s/%d at offset %d (%s); reading it "
                                "with the worker's reader", topic, partition, offset, err.str())
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error on %s/%s: %s", m.topic(), m.partition(), err)
        if msgs:
            # Their keys and headers are read only for dead letters (by the event loop;
            # a deque's append is atomic).
            self._recent.add([_messages_origins(msgs)])
        return out

    # -- batches librdkafka cannot read ------------------------------------------------------
    async def _read_unreadable(self) -> list[Run]:
        """The messages from each offset librdkafka could not read, as the worker's reader
        reads them (an unreadable batch comes out whole), each partition sought past them."""
        runs: list[Run] = []
        readers: list[OriginReader] = []
        with self._lock:
            pending = dict(self._unreadable)
        for key, offset in pending.items():
            topic, partition = key
            at = self._next.get(key)
            if key in self._assigned and at is not None:
                if offset > at:
                    # Messages before it are still to come (they were dropped after a move,
                    # or are further back in librdkafka's queue): it will report it again.
                    continue
                # From where the worker is (a report from before a move names an older
                # offset: this then reads good messages, nothing is lost or repeated).
                chunk = await read_once(self._settings, topic, partition, at)
                if not chunk.offsets:
                    continue  # nothing read: librdkafka tries again, and so do we
                runs.append((topic, partition, chunk.values, chunk.offsets))
                readers.append(chunk_origins(topic, partition, chunk))
                self.seek(topic, partition, chunk.offsets[-1] + 1)
            with self._lock:
                if self._unreadable.get(key) == offset:
                    del self._unreadable[key]
        self._recent.add(readers)
        return self._handed(runs)

    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        with self._lock:
            self._assigned = frozenset(assigned)
            self._assigning = {}
            if self._job is not None:
                self._job.moved |= assigned
        try:
            self._call_hook(self._on_assigned, assigned)
        except BaseException as exc:  # raised by the next getmany: never consume unsought
            log.error("on_assigned failed: %r; consuming nothing until restarted", exc)
            self._error = exc
            with self._lock:
                self._assigning = None
                self._assigned = frozenset()
            consumer.assign([])
            return
        with self._lock:
            sought, self._assigning = self._assigning, None
        tps = []
        for t, p in sorted(assigned):
            offset = sought.get((t, p))
            tps.append(TopicPartition(t, p) if offset is None else TopicPartition(t, p, offset))
        consumer.assign(tps)

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        try:
            self._call_hook(self._on_revoked, revoked)
        except BaseException as exc:
            log.warning("on_revoked failed: %r", exc)
        with self._lock:
            self._assigned = frozenset(self._assigned - revoked)
            if self._job is not None:
                self._job.moved |= revoked
        # The Python client unassigns after this callback returns (eager protocol).

    def _call_hook(self, hook: Any, partitions: set[tuple[str, int]]) -> None:
        """Run the worker's async hook on the event loop and wait for it to finish."""
        loop = self._loop
        if loop is None or hook is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(hook(partitions), loop)
        while True:
            try:
                future.result(HOOK_POLL_SECONDS)
                return
            except concurrent.futures.TimeoutError:
                if loop.is_closed():
                    future.cancel()
                    raise RuntimeError("the event loop closed during a rebalance") from None

    # -- moved partitions --------------------------------------------------------------------
    def _drop_moved(self, records: list[Record],
                    moved: set[tuple[str, int]]) -> list[Record]:
        """Drop records of partitions moved during the consume call that fetched them (some
        may be from before the move) and seek those partitions again to where they were
        moved: their records come again, from there."""
        kept: list[Record] = []
        again: set[tuple[str, int]] = set()
        for r in records:
            key = (r.topic, r.partition)
            if key in moved:
                again.add(key)
            else:
                kept.append(r)
        for key in again:
            if key in self._assigned and key in self._positions:
                log.debug("records of %s/%d fetched across a move: reading again from %d",
                          key[0], key[1], self._positions[key])
                self.seek(key[0], key[1], self._positions[key])
        return kept


def _where(m: Any) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of a librdkafka message, when it has all three."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    if topic is None or partition is None or offset is None or offset < 0:
        return None
    return topic, partition, offset


async def read_once(settings: Settings, topic: str, partition: int,
                    offset: int) -> fetched.Chunk:
    """One fetch of a partition from `offset`, read by the worker's reader (a one-off
    group-less aiokafka consumer); an empty chunk when nothing comes within seconds."""
    # The worker's reader reads what this consumer fetches (its `raw_value`), once
    # the record-set hook is in (idempotent).
    fetched.install()
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                value_deserializer=fetched.raw_value,
                                **KafkaConfig.from_settings(settings).aiokafka(fetch=True))
    await consumer.start()
    try:
        tp = AioTopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        for _ in range(5):
            got = (await consumer.getmany(tp, timeout_ms=1000)).get(tp)
            if isinstance(got, fetched.Chunk) and got.offsets:
                return got
    finally:
        await consumer.stop()
    return fetched.Chunk()


def _messages_origins(msgs: list[Any]) -> OriginReader:
    """An `OriginReader` over librdkafka's messages of one `consume()` call."""

    def read(topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        wanted = set(offsets)
        out: dict[int, Origin] = {}
        for m in msgs:
            offset = m.offset()
            if (offset in wanted and m.error() is None and m.partition() == partition
                    and m.topic() == topic):
                out[offset] = (m.key(), list(m.headers() or ()))
        return out

    return read


def _on_error(err: KafkaError) -> None:
    """librdkafka's client-level errors (brokers down, authentication): it retries."""
    if err.fatal():
        log.error("Kafka client error (fatal): %s", err)
    else:
        log.warning("Kafka client error: %s", err)

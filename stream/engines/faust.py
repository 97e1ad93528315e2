"""The worker as a faust-streaming application (`STREAM_ENGINE=faust`) and the embedding
API that adds it to a faust App a team already runs (`install`).

faust owns the Kafka side: its consumer (aiokafka, in faust's consumer thread), the group
membership, rebalances and the App's lifecycle. An agent takes the input topics' events
in batches and hands them to the native `Worker` (stream/worker.py) as its `Source`, so
every batch takes the worker's own path: decode, fold, dead letters, and the apply that
compare-and-sets the batch's offsets in Redis atomically with its writes. `/metrics`,
`/healthz`, `/readyz`, the settings and the shutdown are those of `stream.app.run_worker`.

A batch's way, in order:
1. faust's consumer fetches and its conductor hands each message to the agent's stream;
2. the agent takes up to `STREAM_BATCH_MAX` events (or what came within
   `STREAM_BATCH_WAIT_MS`), keeping each one's topic, partition, offset and raw value,
   queues them as runs and waits;
3. the worker takes the runs through `getmany` and folds and applies them;
4. only when the worker asks for the next batch (the previous one applied, or dropped to
   be re-read) does the agent go on, and faust ack the events.

faust's acks and commits are never trusted for exactness: faust acks an event even when
the agent that took it raised, and its commits run on their own clock. The offsets in
Redis are the truth: on every assignment each partition is sought to the offset after the
one Redis holds, after faust's own seek to Kafka's committed offset (which only saves
re-reading after a clean stop).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.types import TP
from mode import Service

from ..kafka.config import KafkaConfig
from ..kafka.fetched import Origin
from ..kafka.source import RecentOrigins, Run, records_origins
from ..settings import Settings

log = logging.getLogger("stream.faust")

#: Name of the engagement agent in the App.
AGENT_NAME = "engagement_stream.fold"

Callback = Callable[[set[tuple[str, int]]], Awaitable[None]]


class FaustSource:
    """The native worker's `Source` over a faust App's consumer and an agent of it.

    Seeks: the worker seeks a partition to Redis's offset on assignment, and again when a
    batch's compare-and-set finds Redis elsewhere. A seek backwards leaves faust's buffers
    (the channel queue, the agent's take buffer, a fetch being handed over) holding
    messages above the ones the worker has seen; taken then, they would leave a gap. So
    after a backwards seek the partition is re-synchronised: messages above the highest
    offset the worker had taken are dropped (and the seek repeated, which resets faust's
    read offset that they moved) until one at or below it comes, which can only come from
    the new position (faust keeps each partition in order)."""

    def __init__(self, app: faust.App, settings: Settings, owns_app: bool = False) -> None:
        self.app = app
        self.topics = frozenset(settings.topic_list)
        self._owns_app = owns_app
        #: batches the agent has queued, and the futures it waits on for each, in order
        self._queue: asyncio.Queue[list[Run]] = asyncio.Queue()
        self._pending: list[asyncio.Future[None]] = []
        self._on_assigned: Callback | None = None
        self._on_revoked: Callback | None = None
        self._closed = False
        #: (topic, partition) -> the offset the worker last sought it to
        self._positions: dict[tuple[str, int], int] = {}
        #: (topic, partition) -> the highest offset the agent has taken from faust
        self._high: dict[tuple[str, int], int] = {}
        #: (topic, partition) -> re-synchronising after a backwards seek: drop above this
        self._resync: dict[tuple[str, int], int] = {}
        self._seek_patched = False
        #: called once the App has stopped (an App of its own removes its data directory)
        self.cleanup: Callable[[], None] = lambda: None
        topic = app.topic(*sorted(self.topics), key_serializer="raw", value_serializer="raw")
        app.agent(topic, name=AGENT_NAME, concurrency=1)(self._agent)
        # mode's signal types ask for a `signal` keyword the handlers take in **kwargs
        app.on_partitions_assigned.connect(cast(Any, self._assigned_signal))
        app.on_partitions_revoked.connect(cast(Any, self._revoked_signal))
        self._batch_max = settings.batch_max
        self._recent = RecentOrigins()
        self._within = max(settings.batch_wait_ms, 1) / 1000.0

    # -- the agent (faust's side) ----------------------------------------------------------
    async def _agent(self, stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(self._batch_max, within=self._within):
            runs = _runs_of(events)
            if self._closed or not runs:
                continue
            # Keys and headers are read only for dead letters: keep faust's messages of the
            # last few batches to read them from (as the native source keeps its fetches).
            messages = [event.message for event in events]
            self._recent.add([records_origins(t, p, [m for m in messages
                                                     if (m.topic, m.partition) == (t, p)])
                              for t, p, _, _ in runs])
            high = self._high
            for topic, partition, _, offsets in runs:
                if high.get((topic, partition), -1) < offsets[-1]:
                    high[(topic, partition)] = offsets[-1]
            done: asyncio.Future[None] = loop.create_future()
            self._pending.append(done)
            self._queue.put_nowait(runs)
            # The events are acked when this returns: after the worker applied them (or
            # dropped them to be re-read). Acks are only a hint (see the module notes).
            await done

    async def _assigned_signal(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        mine = self._mine(args)
        self._patch_seek()
        # A worker still starting (in an App it was added to) is not waited for: the App's
        # other agents would wait with it. It takes the assignment when it starts.
        if self._on_assigned is not None and not self._closed:
            await self._on_assigned(mine)

    async def _revoked_signal(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        mine = self._mine(args)
        if self._on_revoked is not None and not self._closed:
            await self._on_revoked(mine)
        for tp in mine:
            self._positions.pop(tp, None)
            self._resync.pop(tp, None)

    def _mine(self, args: tuple[Any, ...]) -> set[tuple[str, int]]:
        """The partitions of our topics in a rebalance signal's set of partitions."""
        tps = args[0] if args else ()
        return {(tp.topic, tp.partition) for tp in tps if tp.topic in self.topics}

    def _patch_seek(self) -> None:
        """After an assignment faust seeks every partition to Kafka's committed offset
        (`perform_seek`, run by its recovery once the assignment signal has been sent, or
        while it is handled): seek ours to Redis's offsets again after it."""
        if self._seek_patched:
            return
        consumer: Any = self.app.consumer
        original = consumer.perform_seek

        async def perform_seek() -> None:
            await original()
            # 1. faust's seek to the committed offsets is done; 2. Redis's offsets win.
            assigned = self.assignment()
            for tp, offset in list(self._positions.items()):
                if tp in assigned:
                    self._seek_now(tp, offset)

        consumer.perform_seek = perform_seek
        self._seek_patched = True

    # -- Source (the worker's side) --------------------------------------------------------
    async def start(self, on_assigned: Callback, on_revoked: Callback) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        if self._owns_app:
            await self.app.start()
        elif self.assignment():
            # Added to an App that had its partitions before the worker started.
            log.info("taking the App's assignment at start")
            await on_assigned(self.assignment())

    async def stop(self) -> None:
        self._closed = True
        self._release(queued=True)
        if self._owns_app:
            await self.app.stop()
            self.cleanup()

    def _release(self, queued: bool = False) -> None:
        """Let the agent go on past the batches the worker has taken (and with `queued`,
        past those it has not: stopping, it will not take them)."""
        waiting = 0 if queued else self._queue.qsize()  # the last ones put, not yet taken
        taken = self._pending[:len(self._pending) - waiting]
        for done in taken:
            if not done.done():
                done.set_result(None)
        self._pending = [d for d in self._pending if not d.done()]

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]:
        if timeout_ms <= 0:
            # A fetch ahead while the batch in flight is applied: the agent holds the next
            # batch back until that one is done, so nothing is ready.
            return []
        self._release()  # the batch taken last is done: the agent may go on
        if self.app.crash_reason is not None and self._owns_app:
            raise RuntimeError(f"the faust App crashed: {self.app.crash_reason!r}")
        try:
            runs = await asyncio.wait_for(self._queue.get(), timeout_ms / 1000.0)
        except TimeoutError:
            return []
        return self._resynced(runs)

    def _resynced(self, runs: list[Run]) -> list[Run]:
        out: list[Run] = []
        for topic, partition, values, offsets in runs:
            tp = (topic, partition)
            mark = self._resync.get(tp)
            if mark is not None:
                keep = next((i for i, o in enumerate(offsets) if o <= mark), None)
                if keep is None:
                    # Still messages buffered before the seek: drop them, and seek again
                    # (they moved faust's read offset past the new position).
                    self._seek_now(tp, self._positions.get(tp, 0))
                    continue
                del self._resync[tp]
                values, offsets = values[keep:], offsets[keep:]
            out.append((topic, partition, values, offsets))
        return out

    def _drop_queued(self) -> None:
        """Batches queued but not yet taken by the worker came before this seek: drop
        them (the worker seeks every partition it holds at once, so what they hold of
        other partitions comes again too)."""
        while not self._queue.empty():
            self._queue.get_nowait()
            done = self._pending.pop()
            if not done.done():
                done.set_result(None)

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        """The original keys and headers of recently taken messages (for dead letters)."""
        return self._recent.lookup(topic, partition, offsets)

    def highwater(self, topic: str, partition: int) -> int | None:
        try:
            high = self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned (any more), or no fetch yet
            return None
        return None if high is None else int(high)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        self._positions[tp] = offset
        self._drop_queued()
        high = self._high.get(tp)
        if high is not None and offset <= high:
            self._resync[tp] = high
        else:
            self._resync.pop(tp, None)
        self._seek_now(tp, offset)

    def _seek_now(self, tp: tuple[str, int], offset: int) -> None:
        """What faust's own `Consumer.seek` does, without awaiting: move the consumer and
        faust's read offset (below which faust drops the messages it fetches)."""
        consumer: Any = self.app.consumer
        try:
            consumer._thread.seek(TP(*tp), offset)
        except Exception as exc:  # revoked meanwhile: its new owner seeks it
            log.debug("seek of %s/%d skipped: %r", *tp, exc)
            return
        consumer._read_offset[TP(*tp)] = offset if offset else None

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """faust commits the offsets of the events it acked (step 4 above), on its own
        clock and when it stops: a hint that saves re-reading, as the native worker's."""

    def assignment(self) -> set[tuple[str, int]]:
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # the consumer is not started (or stopped)
            return set()
        return {(tp.topic, tp.partition) for tp in assigned if tp.topic in self.topics}


def _runs_of(events: list[Any]) -> list[Run]:
    """Events as runs of one partition each, offsets rising within a run: a partition's
    messages come in order, except that after a seek faust may still hand over some read
    before it, then the new position's: a new run starts where the offset falls."""
    runs: list[Run] = []
    for event in events:
        m = event.message
        if (runs and runs[-1][0] == m.topic and runs[-1][1] == m.partition
                and runs[-1][3][-1] < m.offset):
            runs[-1][2].append(m.value)
            runs[-1][3].append(m.offset)
        else:
            runs.append((m.topic, m.partition, [m.value], [m.offset]))
    return runs


def make_app(settings: Settings, datadir: str) -> faust.App:
    """A faust App for the engagement worker alone: group `STREAM_CONSUMER_GROUP`, no
    tables, no leader topic, no web server of faust's (the worker serves its own), and
    faust's data directory (which it makes even without tables) in `datadir`."""
    config = KafkaConfig.from_settings(settings)
    brokers = [f"kafka://{b.strip()}" for b in config.bootstrap.split(",")]
    options: dict[str, Any] = {}
    credentials = _credentials(config)
    if credentials is not None:
        options["broker_credentials"] = credentials
    return faust.App(
        settings.consumer_group, broker=brokers, store="memory://", autodiscover=False,
        datadir=datadir,
        web_enabled=False, topic_disable_leader=True, consumer_auto_offset_reset="earliest",
        broker_session_timeout=config.session_timeout_ms / 1000.0,
        broker_heartbeat_interval=config.heartbeat_interval_ms / 1000.0,
        broker_max_poll_records=settings.batch_max,
        # faust's acks are not what makes the figures exact: stopping need not wait for
        # the events of a take buffer the worker will never see
        stream_wait_empty=False, **options)


def _credentials(config: KafkaConfig) -> Any:
    if config.sasl_mechanism:
        return faust.SASLCredentials(
            username=config.sasl_username, password=config.sasl_password,
            mechanism=config.sasl_mechanism, ssl_context=config.ssl_context())
    return config.ssl_context()


def standalone_source(settings: Settings) -> FaustSource:
    """The source of `STREAM_ENGINE=faust`: an App of its own, started and stopped with
    the worker."""
    logging.getLogger("faust").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("mode").setLevel(max(logging.WARNING, logging.getLogger().level))
    datadir = tempfile.TemporaryDirectory(prefix="engagement-stream-faust-")
    source = FaustSource(make_app(settings, datadir.name), settings, owns_app=True)
    source.cleanup = datadir.cleanup
    return source


def install(app: faust.App, settings: Settings) -> FaustSource:
    """Add the engagement worker to a faust App a team already has: an agent on
    `STREAM_TOPICS`, and a service started and stopped with the App that runs the worker
    and serves `/metrics`, `/healthz` and `/readyz` on `STREAM_METRICS_HOST:PORT`.

    Call it before the App starts. The App's id is the consumer group (not
    `STREAM_CONSUMER_GROUP`); the App's other agents, topics and tables are left alone.
    Stopping the App finishes the batch in flight first."""
    source = FaustSource(app, settings)

    class EngagementService(Service):
        """Runs `stream.app.run_worker` on the App's source until the App stops."""

        async def on_start(self) -> None:
            from ..app import run_worker

            self._stop = asyncio.Event()

            async def run() -> None:
                try:
                    await run_worker(settings, stop=self._stop, install_signals=False,
                                     source=source)
                except Exception as exc:
                    if self._stop.is_set():
                        raise
                    reason: BaseException = exc
                else:
                    if self._stop.is_set():
                        return
                    reason = RuntimeError("the engagement worker stopped")
                # Stalled (or failed) on its own, as a native worker exiting with code 3:
                # crash the App so that its process ends and is restarted.
                log.error("%s; stopping the faust App", reason)
                await app.crash(reason)

            self._task = asyncio.ensure_future(run())

        async def on_stop(self) -> None:
            # 1. the worker finishes the batch in flight; 2. it lets the agent go on.
            self._stop.set()
            try:
                await self._task
            except Exception:
                log.exception("the engagement worker stopped with an error")

    # Added before the App starts, the service starts before the App's consumer joins
    # the group, so the first assignment already finds the worker ready.
    app.add_dependency(EngagementService(loop=app.loop, beacon=app.beacon))
    return source

"""The window between a partition's assignment and its assignment callback's seek.

aiokafka assigns a partition (its position reset to the group's committed offset) before
it runs the rebalance callback, and `getmany` hands over records fetched from that
position meanwhile. The worker's callback (`Worker.on_assigned`) then seeks to the
offset after the one Redis holds, which Kafka's committed offset is usually behind (it
is committed about once a second; after a SIGKILL the next owner reads from it). A slow
callback leaves the main loop holding records from the committed offset when the seek
comes: that batch is applied (what Redis lacks of it), and while Redis applies it the
next batch is fetched ahead, from the seek, repeating the same offsets. That batch used
to be folded against the offsets before the batch in flight and compared against those
after it, so the repeated offsets were counted twice (about 1% of `events_total` in the
SIGKILL test with a callback taking a second).

The first test plays this order exactly, with a source that behaves like aiokafka's
(position from the committed offset at assignment, a seek drops what was fetched from
the old position) and a real Redis; the second runs the worker's main loop the same way
with the committed offset ahead of Redis's (what was handed over before the seek must be
read again from it, or the messages between would be lost); the third checks the store's
compare-and-set on its own; the last makes the assignment callback slow around its
`_resume` and runs the worker against the real broker.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from stream.app import open_store
from stream.decode import Message as Folded
from stream.demo.localservers import RedisServer, TansuBroker
from stream.events import decode
from stream.fold import fold
from stream.kafka.aiokafka_source import AiokafkaSource
from stream.kafka.source import Record, Run, runs_of
from stream.metrics.health import Health
from stream.settings import Settings
from stream.store.store import Conflict
from stream.timebuckets import DayMapper, ms
from stream.worker import Worker
from tests.faults.harness import (
    Truth,
    applied_offsets,
    assert_exact,
    input_highwaters,
    noon_zone,
    truth_of,
)
from tests.support.direct import store_context
from tests.support.kafka import Message, Topics, produce

TOPIC = "t"


def dataset(n: int, seed: int) -> Truth:
    """`n` valid events of every type with exact counters (unique ids, so each counts),
    on one partition of TOPIC, dated over the last hour."""
    now = datetime.now(UTC)
    rng = random.Random(seed)
    messages: list[Message] = []
    for i in range(n):
        ts = int((now - timedelta(seconds=rng.randrange(60, 3600))).timestamp() * 1000)
        user = f"u{rng.randrange(300)}"
        kind = rng.choice(["activity", "activity", "visit", "conversion", "signup",
                           "cancellation", "survey"])
        ev: dict[str, Any] = {"event_id": f"e{seed}-{i}", "type": kind, "user_id": user,
                              "ts": ts}
        if kind in ("visit", "conversion"):
            ev["campaign"] = f"c{rng.randrange(12)}"
        if kind == "survey":
            ev["survey"], ev["score"] = "nps", rng.randrange(11)
        messages.append((TOPIC, user.encode(), json.dumps(ev).encode()))
    return truth_of(messages, now, noon_zone(now))


class ClientLikeSource:
    """One partition of TOPIC served like aiokafka serves it: a position (set from the
    group's committed offset when assigned, moved by `seek`), `getmany` handing over what
    follows it."""

    def __init__(self, values: list[bytes], committed: int) -> None:
        self.values = values
        self.position = committed

    def assignment(self) -> set[tuple[str, int]]:
        return {(TOPIC, 0)}

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.position = offset

    def highwater(self, topic: str, partition: int) -> int | None:
        return len(self.values)

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]:
        start = self.position
        stop = min(len(self.values), start + max_records)
        self.position = stop
        return runs_of([Record(TOPIC, 0, o, None, self.values[o]) for o in range(start, stop)])

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Any]:
        return {}


def new_worker(settings: Settings, source: ClientLikeSource) -> Worker:
    store = open_store(settings)
    store.load_scripts()
    store.check_meta()
    return Worker(settings, store, source, None,  # type: ignore[arg-type]
                  Health(CollectorRegistry()))


def events_totals(url: str, shards: int) -> dict[str, int]:
    """`events_total` by type as Redis holds it: the `e:<type>` fields of every shard's
    totals hash."""
    client = redis.Redis.from_url(url)
    try:
        out: dict[str, int] = {}
        for shard in range(shards):
            tag = f"es:{{es{shard}}}:"
            for field, value in client.hgetall(tag + "tot").items():
                name = field.decode()
                if name.startswith("e:"):
                    out[name[2:]] = out.get(name[2:], 0) + int(value)
        return out
    finally:
        client.close()


@pytest.mark.parametrize("shards", [1, 4])
async def test_records_handed_over_before_the_resume_seek_count_once(
        redis_server: RedisServer, shards: int, caplog: pytest.LogCaptureFixture) -> None:
    truth = dataset(3000, seed=shards)
    values = [v for _, _, v in truth.messages]
    settings = Settings(redis_url=redis_server.url, timezone=truth.timezone,  # type: ignore[arg-type]
                        redis_shards=shards, batch_max=800)
    # 1. A first owner applies offsets 0-1199, then dies before committing any to Kafka.
    first = ClientLikeSource(values[:1200], committed=0)
    worker = new_worker(settings, first)
    await worker.on_assigned({(TOPIC, 0)})
    while first.position < 1200:
        await worker.process(await first.getmany(0, settings.batch_max))
    # 2. The next owner is assigned the partition. Its client reads from the group's
    #    committed offset (900, behind Redis's 1199) and hands over 900-1699 before the
    #    assignment callback has run ...
    second = ClientLikeSource(values, committed=900)
    worker = new_worker(settings, second)
    early = await second.getmany(0, settings.batch_max)
    # 3. ... which seeks to 1200, after the offset Redis holds.
    await worker.on_assigned({(TOPIC, 0)})
    assert second.position == 1200
    # 4. The main loop processes what it was handed: 1200-1699 are applied, and while
    #    Redis applies them the next batch is fetched ahead from the seek, 1200-1999,
    #    whose first 500 offsets must change nothing.
    await worker.process(early)
    while second.position < len(values):
        await worker.process(await second.getmany(0, settings.batch_max))
    stored = redis.Redis.from_url(redis_server.url).hget("es:{es0}:off", "t/0")
    assert stored == str(len(values) - 1).encode()
    # A batch folded ahead is folded against the offsets Redis holds once the batch in
    # flight is applied: no compare-and-set refuses it (no reload, no re-read).
    assert not [r for r in caplog.records if "reloading offsets" in r.getMessage()]
    assert events_totals(redis_server.url, shards) == {
        k: v for k, v in truth.run.figures["events_total"].items() if v}
    if shards == 1:
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)


class CallbackSource(ClientLikeSource):
    """`ClientLikeSource` run by `Worker.run`: `start` runs the assignment callback in a
    task of its own, as aiokafka's coordinator does, while `getmany` (a short poll)
    hands over what follows the position."""

    async def start(self, on_assigned: Any, on_revoked: Any) -> None:
        self.callback = asyncio.ensure_future(on_assigned({(TOPIC, 0)}))

    async def stop(self) -> None:
        await self.callback

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]:
        await asyncio.sleep(0.01)
        return await super().getmany(timeout_ms, max_records)

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        pass


class SlowResumeWorker(Worker):
    async def _resume(self, partitions: set[tuple[str, int]]) -> None:
        await asyncio.sleep(0.2)
        await super()._resume(partitions)


async def test_records_handed_over_from_above_redis_before_the_seek_are_read_again(
        redis_server: RedisServer) -> None:
    """Kafka's committed offset ahead of Redis's (Redis lost its last writes, which the
    group had committed): what the client hands over from it before the callback's seek
    is dropped and read again from the seek, never applied over the gap."""
    truth = dataset(3000, seed=5)
    values = [v for _, _, v in truth.messages]
    settings = Settings(redis_url=redis_server.url, timezone=truth.timezone,  # type: ignore[arg-type]
                        batch_max=800)
    # 1. Redis holds 0-1199; the group's committed offset is 1600.
    first = ClientLikeSource(values[:1200], committed=0)
    worker = new_worker(settings, first)
    await worker.on_assigned({(TOPIC, 0)})
    while first.position < 1200:
        await worker.process(await first.getmany(0, settings.batch_max))
    # 2. A worker whose callback is slow: the main loop is handed 1600-2399 before the
    #    callback seeks to 1200.
    source = CallbackSource(values, committed=1600)
    store = open_store(settings)
    worker = SlowResumeWorker(settings, store, source, None,  # type: ignore[arg-type]
                              Health(CollectorRegistry()))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 30
    while source.position < len(values) or worker.applied.get(("t/0", 0)) != len(values) - 1:
        assert time.monotonic() < deadline, (source.position, worker.applied)
        assert not task.done(), task.result()
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    store.close()
    assert events_totals(redis_server.url, 1) == {
        k: v for k, v in truth.run.figures["events_total"].items() if v}


def test_writes_are_compared_against_the_offsets_they_were_folded_on(
        redis_server: RedisServer) -> None:
    """The store compares a batch's writes against the offsets its fold skipped against,
    not against the caller's offsets at apply time: writes folded before the caller's
    offsets moved are refused (Conflict: reload and re-read), never applied on top."""
    truth = dataset(40, seed=7)
    settings = Settings(redis_url=redis_server.url, timezone=truth.timezone)  # type: ignore[arg-type]
    store = open_store(settings)
    store.load_scripts()
    store.check_meta()
    days = DayMapper(truth.timezone)
    today = days.today(truth.now)
    now_ms = ms(truth.now)
    msgs = [Folded("t/0", o, decode(v, now_ms, 400 * 86_400_000), v)
            for o, (_, _, v) in enumerate(truth.messages)]
    applied: dict[tuple[str, int], int] = {}
    store.apply(fold(msgs[:20], store_context(store, days, today, applied)), applied, today)
    # Folded against offsets before the first 20 were applied (all 40 taken), then
    # handed to the store with the offsets after them.
    stale = fold(msgs, store_context(store, days, today, applied))
    with pytest.raises(Conflict):
        store.apply(stale, {("t/0", 0): 19}, today)
    store.apply(fold(msgs, store_context(store, days, today, {("t/0", 0): 19})),
                {("t/0", 0): 19}, today)
    store.close()
    assert events_totals(redis_server.url, 1) == {
        k: v for k, v in truth.run.figures["events_total"].items() if v}


class SlowCallbackWorker(Worker):
    """A worker whose assignment callback takes its time around the seek (as one that
    looks something up there would): the client hands over records from the committed
    offset before the seek, and has fetched again from the seek after it."""

    async def _resume(self, partitions: set[tuple[str, int]]) -> None:
        await asyncio.sleep(1.5)
        await super()._resume(partitions)
        # The client's fetch in flight (up to its 0.5 s wait) is dropped, and the next one
        # reads from the seek.
        await asyncio.sleep(1.5)


def run_worker(settings: Settings, kind: type[Worker], highs: dict[str, int]) -> None:
    """Run a worker of `kind` in this thread until Redis holds every offset of `highs`."""

    async def main() -> None:
        store = open_store(settings)
        worker = kind(settings, store, AiokafkaSource(settings), None,  # type: ignore[arg-type]
                      Health(CollectorRegistry()))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 60
        try:
            while applied_offsets(settings.redis_url.get_secret_value()) != {
                    s: h - 1 for s, h in highs.items() if h}:
                assert time.monotonic() < deadline, "the worker did not apply every message"
                assert not task.done(), task.result()
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            store.close()

    asyncio.run(main())


@pytest.mark.slow
def test_slow_assignment_callback_counts_each_message_once(
        broker: TansuBroker, redis_server: RedisServer, topics: Topics) -> None:
    """Against the real broker: a partition's new owner whose group has committed nothing
    (Kafka's offsets behind Redis's, as after a crash) and whose callback is slow."""
    truth = dataset(4000, seed=3)
    topic = topics.inputs[0]
    messages = [(topic, k, v) for _, k, v in truth.messages]
    truth = truth_of(messages, truth.now, truth.timezone)

    def settings(group: str) -> Settings:
        return Settings(kafka_brokers=broker.bootstrap, redis_url=redis_server.url,  # type: ignore[arg-type]
                        timezone=truth.timezone, topics=topic, dlq_topic=topics.dead_letter,
                        consumer_group=group, session_timeout_ms=6000,
                        heartbeat_interval_ms=1000)

    asyncio.run(produce(broker.bootstrap, messages[:2000]))
    run_worker(settings("first"), Worker, input_highwaters(broker.bootstrap, topics))
    asyncio.run(produce(broker.bootstrap, messages[2000:]))
    highs = input_highwaters(broker.bootstrap, topics)
    assert sum(highs.values()) == truth.total
    run_worker(settings("second"), SlowCallbackWorker, highs)
    with RedisServer() as ref:
        assert_exact(redis_server.url, truth, ref)

"""Fault-test harness: datasets with a ground truth, real worker processes, exact checks.

Ground truth: every figure that the contract calls exact is compared with the
brute-force oracle run on the raw messages; every HyperLogLog count is compared with a
reference HyperLogLog built in a separate Redis from the user ids of the valid
`activity` events (HLL registers depend neither on order nor on repeats, so the
comparison is exact, not approximate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from stream import figures as figures_mod
from stream.app import open_store
from stream.demo.localservers import RedisServer
from stream.keys import KeySpace
from stream.settings import Settings
from stream.store.store import Store
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.kafka import Message, Topics, consume_all, highwaters
from tests.support.workers import WorkerProcess, wait_until, worker_env

RETENTION_DAYS = 90  # the default STREAM_RETENTION_DAYS: older days get no PFADD


def noon_zone(now: datetime | None = None) -> str:
    """An IANA zone (`Etc/GMT±N`) in which it is about noon now: a test that runs for
    minutes can never cross a local midnight, so its figures cannot shift under it."""
    now = now or datetime.now(UTC)
    shift = (12 - now.hour) % 24
    if shift > 12:
        shift -= 24
    # Etc/GMT signs are inverted: Etc/GMT-5 is UTC+5.
    return "UTC" if shift == 0 else f"Etc/GMT{-shift:+d}"


@dataclass
class Truth:
    """Messages to produce and everything the processor must end up with."""

    now: datetime
    timezone: str
    messages: list[Message]
    dead_letters: dict[str, int]
    run: oracle.OracleRun

    @property
    def values(self) -> list[bytes | None]:
        return [v for _, _, v in self.messages]

    @property
    def total(self) -> int:
        return len(self.messages)


def truth_of(messages: list[Message], now: datetime, timezone: str) -> Truth:
    run = oracle.run([v for _, _, v in messages], now, timezone)
    dead = {r: run.dead_letters.get(r, 0) for r in oracle.REASONS}
    return Truth(now, timezone, messages, dead, run)


def make_dataset(topics: Topics, size: int, *, bulk_activity: int = 0, seed: int = 0,
                 users: int = 40_000) -> Truth:
    """The seeded dataset (all event types, duplicates, bad input) of about `size`
    messages on `topics`, plus `bulk_activity` extra plain activity events (fast to
    generate) spread through it; the dataset's own order constraints are kept."""
    now = datetime.now(UTC)
    zone = noon_zone(now)
    data = ds.generate(now, size=size, seed=seed, timezone=zone)
    base = topics.rename(data.messages)
    if bulk_activity:
        rng = random.Random(seed + 1)
        tz = ZoneInfo(zone)
        midnight = datetime.combine(now.astimezone(tz).date(), datetime.min.time(), tzinfo=tz)
        start_ms = int((midnight - timedelta(days=40)).timestamp() * 1000)
        end_ms = int(now.timestamp() * 1000) - 120_000
        bulk: list[Message] = []
        for n in range(bulk_activity):
            user = f"bulk-{rng.randrange(users)}"
            ev = {"event_id": f"bulk-{seed}-{n}", "type": "activity", "user_id": user,
                  "ts": rng.randrange(start_ms, end_ms)}
            bulk.append((rng.choice(topics.inputs), user.encode(),
                         json.dumps(ev, separators=(",", ":")).encode()))
        # Merge, keeping the dataset's relative order (its duplicates and reorderings).
        total = len(base) + len(bulk)
        slots = set(rng.sample(range(total), len(base)))
        ib = iter(base)
        ia = iter(bulk)
        merged = [next(ib) if i in slots else next(ia) for i in range(total)]
        base = merged
    return truth_of(base, now, zone)


def reference_hll(ref: RedisServer, truth: Truth, keys: KeySpace) -> Store:
    """A second Redis holding, under the worker's key names, a HyperLogLog per local day
    of the user ids of every valid activity event (days the store keeps)."""
    tz = ZoneInfo(truth.timezone)
    today = (truth.now.astimezone(tz).date() - date(1970, 1, 1)).days
    per_day: dict[int, set[str]] = {}
    for ev in truth.run.accepted:
        if ev.type != "activity":
            continue
        day = (oracle.from_ms(ev.ts_ms).astimezone(tz).date() - date(1970, 1, 1)).days
        if day >= today - RETENTION_DAYS:
            per_day.setdefault(day, set()).add(ev.user_id)
    client = redis.Redis.from_url(ref.url)
    client.flushall()
    pipe = client.pipeline(transaction=False)
    for day, users in per_day.items():
        members = sorted(users)
        for i in range(0, len(members), 5000):
            pipe.pfadd(keys.dau(day), *members[i:i + 5000])
    pipe.execute()
    return Store(client, keys, None)  # type: ignore[arg-type]


def settings_for(redis_url: str, truth: Truth) -> Settings:
    return Settings(redis_url=redis_url, timezone=truth.timezone)  # type: ignore[arg-type]


def assert_exact(redis_url: str, truth: Truth, ref: RedisServer) -> dict[str, Any]:
    """Every figure in Redis equals the ground truth; returns the figures."""
    settings = settings_for(redis_url, truth)
    store = open_store(settings)
    ref_store = reference_hll(ref, truth, store.keys)
    try:
        tz = ZoneInfo(truth.timezone)
        today = (datetime.now(UTC).astimezone(tz).date() - date(1970, 1, 1)).days
        assert today == (truth.now.astimezone(tz).date() - date(1970, 1, 1)).days
        raw = store.read(today)
        got = figures_mod.compute(raw)
        ref_raw = ref_store.read(today)
        # HyperLogLogs: each day key and each window union equal the reference's.
        hll = ("dau", "wau", "mau", "calendar_mau", "prev_dau", "prev_mau")
        assert {n: getattr(raw, n) for n in hll} == {n: getattr(ref_raw, n) for n in hll}
        ref_days = sorted(int(k.rsplit(b":", 1)[1]) for k in ref_store.client.keys("*:dau:*"))
        got_days = sorted(int(k.rsplit(b":", 1)[1]) for k in store.client.keys("*:dau:*"))
        assert got_days == ref_days
        for day in ref_days:
            assert (store.client.pfcount(store.keys.dau(day))
                    == ref_store.client.pfcount(store.keys.dau(day))), day
        want = dict(truth.run.figures)
        ref_figs = figures_mod.compute(ref_raw)
        for name in oracle.UNIQUE:
            want.pop(name, None)
            if name in ref_figs:
                want[name] = ref_figs[name]
        # Every figure the oracle defines must be there and equal (figures the oracle
        # does not define yet are not judged here).
        assert set(want) <= set(got), set(want) - set(got)
        for name, value in want.items():
            if isinstance(value, dict):
                assert got[name].keys() == value.keys(), name
                for k, v in value.items():
                    assert got[name][k] == pytest.approx(v, abs=1e-12), (name, k, got[name][k], v)
            elif isinstance(value, float):
                assert got[name] == pytest.approx(value, abs=1e-12), (name, got[name], value)
            else:
                assert got[name] == value, (name, got[name], value)
        assert got["dead_letter_total"] == truth.dead_letters
        return got
    finally:
        store.close()
        ref_store.client.close()


def applied_offsets(redis_url: str) -> dict[str, int]:
    """`<topic>/<partition>` -> last applied offset, as stored in Redis (shard 0)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return {k.decode(): int(v) for k, v in client.hgetall("es:{es0}:off").items()}
    finally:
        client.close()


def input_highwaters(bootstrap: str, topics: Topics) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic in topics.inputs:
        for p, high in asyncio.run(highwaters(bootstrap, topic)).items():
            out[f"{topic}/{p}"] = high
    return out


def wait_applied(redis_url: str, highs: dict[str, int], timeout: float) -> None:
    """Until Redis holds, for every input partition, the offset of its last message."""
    want = {src: high - 1 for src, high in highs.items() if high > 0}

    def done() -> bool:
        try:
            got = applied_offsets(redis_url)
        except redis.exceptions.RedisError:
            return False
        return all(got.get(src, -1) >= off for src, off in want.items())

    wait_until(done, timeout, "every message applied in Redis", interval=0.5)
    got = applied_offsets(redis_url)
    assert {s: got.get(s) for s in want} == want  # never past the end either


def lag_of(worker: WorkerProcess) -> float | None:
    samples = [v for (n, _), v in worker.metrics().items() if n == "engagement_consumer_lag"]
    return sum(samples) if samples else None


def wait_lag_zero(workers: list[WorkerProcess], timeout: float = 120.0) -> None:
    """Every live worker reports lag 0 (the workers together hold every partition)."""
    def ok() -> bool:
        lags = [lag_of(w) for w in workers]
        return all(lag == 0 for lag in lags if lag is not None) and any(
            lag is not None for lag in lags)
    try:
        wait_until(ok, timeout, "lag 0 on every worker", interval=0.5)
    except AssertionError as exc:
        detail = [{dict(k[1]).get("partition", "") + "@" + dict(k[1]).get("topic", "")[-30:]: v
                   for k, v in w.metrics().items() if k[0] == "engagement_consumer_lag"}
                  for w in workers]
        raise AssertionError(f"{exc}: {detail}") from None


def assert_dead_letter_topic(bootstrap: str, topics: Topics, truth: Truth) -> None:
    """Each bad message is on the dead-letter topic with its reason and original bytes
    (a crash between producing and applying may repeat one; none may be missing)."""
    expected = sum(truth.dead_letters.values())
    got = asyncio.run(consume_all(bootstrap, topics.dead_letter, timeout=60))
    by_origin = {}
    for m in got:
        origin = (m.header("source_topic"), m.header("source_partition"),
                  m.header("source_offset"))
        prev = by_origin.setdefault(origin, m)
        assert prev.value == m.value and prev.header("error") == m.header("error")
    assert len(by_origin) == expected
    reasons = Counter(m.header("error") for m in by_origin.values())
    assert reasons == +Counter(truth.dead_letters)
    bad = Counter(v for v in truth.values if oracle.check(v, truth.now).reason)
    assert Counter(m.value for m in by_origin.values()) == bad


def env_for(bootstrap: str, redis_url: str, topics: Topics, truth: Truth,
            **extra: str) -> dict[str, str]:
    return worker_env(bootstrap, redis_url, {
        **topics.env(), "STREAM_TIMEZONE": truth.timezone, "STREAM_LOG_LEVEL": "INFO",
        **extra})


def logs_on_failure(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- worker {i} ---\n{w.log()[-4000:]}" for i, w in enumerate(workers))


@contextlib.contextmanager
def logged_workers(*workers: WorkerProcess | list[WorkerProcess]) -> Iterator[None]:
    """Stop the workers however the block ends, and print their logs when it fails. A
    list is read when the block ends, so workers added to it inside (restarted ones,
    retired ones) are included."""
    def every() -> list[WorkerProcess]:
        return [w for item in workers for w in (item if isinstance(item, list) else [item])]

    try:
        yield
    except BaseException:
        print(logs_on_failure(every()))
        raise
    finally:
        for worker in every():
            worker.stop()


# -- Redis losing its latest writes --------------------------------------------------------


def aof_redis() -> RedisServer:
    """A Redis with `appendonly yes` (`appendfsync everysec`): what a host crash loses
    is its AOF's un-fsynced tail, which :func:`snapshot` and :func:`crash_and_restore`
    make real. No AOF rewrite during the test: the copied directory stays a consistent
    AOF."""
    return RedisServer(appendonly=True, extra_args=["--auto-aof-rewrite-percentage", "0"])


def parts(truth: Truth) -> tuple[list[Message], list[Message], list[Message]]:
    """The messages in three thirds, in order."""
    n = truth.total
    return truth.messages[: n // 3], truth.messages[n // 3: 2 * n // 3], \
        truth.messages[2 * n // 3:]


def snapshot(redis: RedisServer, into: Path) -> None:
    """Copy the AOF directory as it is on disk now."""
    time.sleep(1.5)  # everysec: what is older than a second is on disk
    shutil.copytree(redis.data_dir / "appendonlydir", into)


def crash_and_restore(redis: RedisServer, copy: Path) -> None:
    """SIGKILL Redis and restart it from the AOF `copy`: its later writes are lost."""
    redis.kill()
    shutil.rmtree(redis.data_dir / "appendonlydir")
    shutil.copytree(copy, redis.data_dir / "appendonlydir")
    redis.start()


def wait_kafka_ahead(bootstrap: str, topics: Topics, stored: dict[str, int],
                     within: float) -> None:
    """Until Kafka's committed offsets are past the offsets of the AOF copy `stored` (a
    worker commits at most once a second); fails if they are not `within` seconds from
    now. The last look is taken at the deadline, not before."""
    deadline = time.monotonic() + within

    def ahead() -> bool:
        committed = committed_offsets(bootstrap, topics.group, topics)
        return any(off > stored.get(s, -1) + 1 for s, off in committed.items())

    while not ahead():
        left = deadline - time.monotonic()
        assert left > 0, "the scenario needs Kafka's committed offsets ahead of Redis"
        time.sleep(min(0.5, left))


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds


#: A worker whose partitions resume where Kafka's committed offsets (or its own
#: position) say, never where Redis's say: what the worker would be if its offsets lived
#: only in Kafka. Test-only; used as the control that shows the Redis offsets matter.
KAFKA_OFFSETS_ONLY = """
import sys
from stream import worker
from stream.__main__ import main


async def _resume(self, partitions):
    srcs = {worker.src_of(t, p) for t, p in partitions}
    loaded = await self._redis(self.store.load_offsets, sorted(srcs))
    for key in [k for k in self.applied if k[0] in srcs]:
        del self.applied[key]
    self.applied.update(loaded)  # the compare-and-set passes; no seek


worker.Worker._resume = _resume
sys.exit(main(["worker"]))
"""


class KafkaOffsetsWorker(WorkerProcess):
    """The control worker (see KAFKA_OFFSETS_ONLY)."""

    def start(self) -> KafkaOffsetsWorker:
        import subprocess
        import sys

        from tests.support.workers import ROOT

        self.proc = subprocess.Popen([sys.executable, "-c", KAFKA_OFFSETS_ONLY], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self


def committed_offsets(bootstrap: str, group: str, topics: Topics) -> dict[str, int]:
    """`<topic>/<partition>` -> the group's committed offset in Kafka (absent: none)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> dict[str, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            out = {}
            for topic in topics.inputs:
                for p in range(4):
                    off = await consumer.committed(TopicPartition(topic, p))
                    if off is not None and off >= 0:
                        out[f"{topic}/{p}"] = off
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def produce_all(bootstrap: str, messages: list[Message]) -> None:
    from tests.support.kafka import produce

    asyncio.run(produce(bootstrap, messages))


def group_members(bootstrap: str, group: str) -> int | None:
    """Members of a consumer group as the broker describes it (None: not described)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def read() -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_consumer_groups([group])
            for response in described:
                for g in response.groups:
                    return len(g[5]) if len(g) > 5 else None
            return None
        finally:
            await admin.close()

    return asyncio.run(read())

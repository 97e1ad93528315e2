"""The contenders the worker is measured against, each run in its own process.

`python -m benchmarks.contenders NAME --bootstrap HOST:PORT --topic T --group G --total N
[--redis URL --prefix P]` consumes `T` from the beginning with its own consumer group and
prints one line `progress <unix time> <count>` each time another 1 % of `N` is done, and
`done <unix time> <count>` at the end. The driver (benchmarks/run.py) turns those lines
into a rate between 10 % and 90 % progress.

- `a`    aiokafka `getmany`, counting messages: the Kafka client's own limit.
- `a2`   aiokafka `getmany` plus `json.loads` per message: a plain consumer.
- `ck`   confluent-kafka `consume`, counting messages: librdkafka's limit.
- `c`    the naive way: a faust agent iterating one event at a time and awaiting one
         `redis.asyncio` PFADD per event.
- `d`    a Quix Streams application (at-least-once defaults) folding the events into
         daily HyperLogLogs through a batching sink (one multi-member PFADD per day key).
- `bw`   a Bytewax dataflow (its Kafka source, batches of 10k) folding the events the same
         way through a dynamic sink: each batch it writes is one PFADD per day key.
- `pw`   a Pathway pipeline (its Kafka reader decoding the JSON in its Rust engine, only
         `user_id` and `ts`) folding the events the same way: the rows of each of its
         minibatches (`pw.io.subscribe`) become one PFADD per day key. Pathway runs from a
         virtual environment of its own (benchmarks/run.py makes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

DAY_MS = 86_400_000


def day_of(ts: Any) -> int:
    """UTC day number of a contract `ts` (epoch ms or RFC 3339)."""
    if isinstance(ts, int):
        return ts // DAY_MS
    return int(datetime.fromisoformat(ts.upper()).timestamp() * 1000) // DAY_MS


def _say(line: str) -> None:
    # Straight to file descriptor 1: faust replaces sys.stdout with its logger.
    os.write(1, (line + "\n").encode())


class Progress:
    """Prints a line each time another 1 % of `total` is reached."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.step = max(1, total // 100)
        self.next = self.step

    def add(self, n: int) -> bool:
        """Count `n` more; True once `total` is reached."""
        self.count += n
        if self.count >= self.next:
            _say(f"progress {time.time():.6f} {self.count}")
            while self.next <= self.count:
                self.next += self.step
        if self.count >= self.total:
            _say(f"done {time.time():.6f} {self.count}")
            return True
        return False


async def _aiokafka_loop(args: argparse.Namespace, parse: bool, raw: bool = False) -> None:
    """(a), (a2), and with `raw` (ar): the worker's own record reading (stream/kafka/fetched.py,
    a value list and an offset list per partition) under the same count-only loop."""
    from aiokafka import AIOKafkaConsumer

    extra: dict[str, Any] = {}
    if raw:
        from stream.kafka import fetched

        fetched.install()
        extra["value_deserializer"] = fetched.raw_value
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
        **extra,
    )
    await consumer.start()
    progress = Progress(args.total)
    loads = json.loads
    try:
        while True:
            data = await consumer.getmany(timeout_ms=100, max_records=10_000)
            n = 0
            for msgs in data.values():
                if parse:
                    for m in msgs:
                        loads(m.value)
                n += len(msgs)
            if n and progress.add(n):
                break
            if n:
                await consumer.commit()
    finally:
        await consumer.stop()


def _confluent_loop(args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": args.group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.queue.backoff.ms": 100,
    })
    consumer.subscribe([args.topic])
    progress = Progress(args.total)
    try:
        while True:
            msgs = consumer.consume(10_000, 0.1)
            n = sum(1 for m in msgs if m.error() is None)
            if n and progress.add(n):
                break
            if n:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()


def _faust(args: argparse.Namespace) -> None:
    import faust
    import redis.asyncio as aioredis

    app = faust.App(
        args.group, broker=f"kafka://{args.bootstrap}", store="memory://",
        web_enabled=False, topic_partitions=4, consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
    )
    topic = app.topic(args.topic, value_serializer="raw")
    r = aioredis.Redis.from_url(args.redis)
    progress = Progress(args.total)
    prefix = args.prefix

    @app.agent(topic)
    async def fold(stream: Any) -> None:
        async for value in stream:
            event = json.loads(value)
            await r.pfadd(f"{prefix}:dau:{day_of(event['ts'])}", event["user_id"])
            if progress.add(1):
                sys.stdout.flush()

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


def _quix(args: argparse.Namespace) -> None:
    import redis
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink, SinkBatch

    client = redis.Redis.from_url(args.redis)
    progress = Progress(args.total)
    prefix = args.prefix

    class DailyHllSink(BatchingSink):  # type: ignore[misc]
        """One PFADD per day key per batch, like the worker's own HyperLogLog writes."""

        def add(self, *a: Any, **kw: Any) -> None:
            super().add(*a, **kw)
            progress.add(1)

        def write(self, batch: SinkBatch) -> None:
            days: dict[int, list[str]] = {}
            for item in batch:
                event = item.value
                days.setdefault(day_of(event["ts"]), []).append(event["user_id"])
            pipe = client.pipeline(transaction=False)
            for day, users in days.items():
                pipe.pfadd(f"{prefix}:dau:{day}", *users)
            pipe.execute()

    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", loglevel="WARNING",
                      auto_create_topics=False)
    topic = app.topic(args.topic, value_deserializer="json")
    sdf = app.dataframe(topic)
    sdf.sink(DailyHllSink())
    app.run()


def _pfadd_days(client: Any, prefix: str, pairs: list[tuple[int, str]]) -> None:
    """One multi-member PFADD per day key for `pairs` of (day, user id)."""
    days: dict[int, list[str]] = {}
    for day, user in pairs:
        days.setdefault(day, []).append(user)
    pipe = client.pipeline(transaction=False)
    for day, users in days.items():
        pipe.pfadd(f"{prefix}:dau:{day}", *users)
    pipe.execute()


def _bytewax(args: argparse.Namespace) -> None:
    import bytewax.operators as op
    import redis
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import run_main

    client = redis.Redis.from_url(args.redis)
    progress = Progress(args.total)
    prefix = args.prefix
    loads = json.loads

    class Part(StatelessSinkPartition):  # type: ignore[misc]
        def write_batch(self, items: list[tuple[int, str]]) -> None:
            _pfadd_days(client, prefix, items)
            progress.add(len(items))

    class DailyHllSink(DynamicSink):  # type: ignore[misc]
        def build(self, *a: Any) -> Part:
            return Part()

    def day_user(msg: Any) -> tuple[int, str]:
        event = loads(msg.value)
        return day_of(event["ts"]), event["user_id"]

    flow = Dataflow("daily_hll")
    messages = op.input("kafka", flow, KafkaSource(
        [args.bootstrap], [args.topic], batch_size=10_000,
        add_config={"fetch.queue.backoff.ms": "100"}))
    op.output("redis", op.map("day_user", messages, day_user), DailyHllSink())
    run_main(flow)


def _pathway(args: argparse.Namespace) -> None:
    import pathway as pw
    import redis

    client = redis.Redis.from_url(args.redis)
    progress = Progress(args.total)
    prefix = args.prefix
    pending: list[tuple[int, str]] = []

    # Built from types: the module's postponed annotations would hide `pw` from a class.
    schema = pw.schema_from_types(user_id=str, ts=pw.Json)
    events = pw.io.kafka.read(
        {"bootstrap.servers": args.bootstrap, "group.id": args.group,
         "auto.offset.reset": "earliest", "fetch.queue.backoff.ms": "100"},
        topic=args.topic, format="json", schema=schema, autocommit_duration_ms=100)

    def on_change(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
        pending.append((day_of(row["ts"].value), row["user_id"]))

    def on_time_end(time: int) -> None:
        if pending:
            _pfadd_days(client, prefix, pending)
            n = len(pending)
            pending.clear()
            progress.add(n)

    pw.io.subscribe(events, on_change=on_change, on_time_end=on_time_end)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=["a", "a2", "ar", "ck", "c", "d", "bw", "pw"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--redis", default="")
    p.add_argument("--prefix", default="bench")
    args = p.parse_args()
    if args.name in ("a", "a2", "ar"):
        asyncio.run(_aiokafka_loop(args, parse=args.name == "a2", raw=args.name == "ar"))
    elif args.name == "ck":
        _confluent_loop(args)
    elif args.name == "c":
        _faust(args)
    elif args.name == "bw":
        _bytewax(args)
    elif args.name == "pw":
        _pathway(args)
    else:
        _quix(args)


if __name__ == "__main__":
    main()

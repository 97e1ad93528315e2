"""Kafka helpers for tests: per-test topic names, bulk produce, read a topic back.

Written for the embedded Tansu broker (no idempotent producer, ``end_offsets()`` not
reliable): producing uses ``acks=1`` without idempotence, and reading stops at the
highwater marks reported by fetch responses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support.dataset import DEAD_LETTER_TOPIC, DEFAULT_TOPICS

PARTITIONS = 4

Message = tuple[str, bytes | None, bytes]


@dataclass(frozen=True)
class Topics:
    """One test's own topic names: the contract's four input topics and the dead-letter
    topic, each suffixed with the same unique id, plus a consumer group of its own."""

    suffix: str
    activity: str
    conversions: str
    cancellations: str
    surveys: str
    dead_letter: str
    group: str
    mapping: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def inputs(self) -> list[str]:
        """The four input topics, in the contract's order."""
        return [self.activity, self.conversions, self.cancellations, self.surveys]

    @property
    def all(self) -> list[str]:
        """Input topics and the dead-letter topic."""
        return [*self.inputs, self.dead_letter]

    def env(self) -> dict[str, str]:
        """``STREAM_TOPICS``, ``STREAM_DLQ_TOPIC`` and ``STREAM_CONSUMER_GROUP``."""
        return {
            "STREAM_TOPICS": ",".join(self.inputs),
            "STREAM_DLQ_TOPIC": self.dead_letter,
            "STREAM_CONSUMER_GROUP": self.group,
        }

    def rename(self, messages: Iterable[Message]) -> list[Message]:
        """Map the contract's default topic names in ``messages`` to this test's names."""
        return [(self.mapping.get(t, t), k, v) for t, k, v in messages]


def unique_topics(prefix: str = "t") -> Topics:
    """Fresh names (not yet created) for one test, e.g. ``engagement.activity.t-1a2b3c4d``."""
    suffix = f"{prefix}-{uuid.uuid4().hex[:10]}"
    names = [f"{name}.{suffix}" for name in (*DEFAULT_TOPICS, DEAD_LETTER_TOPIC)]
    mapping = dict(zip((*DEFAULT_TOPICS, DEAD_LETTER_TOPIC), names, strict=True))
    activity, conversions, cancellations, surveys, dead_letter = names
    return Topics(
        suffix=suffix,
        activity=activity,
        conversions=conversions,
        cancellations=cancellations,
        surveys=surveys,
        dead_letter=dead_letter,
        group=f"engagement-stream-{suffix}",
        mapping=mapping,
    )


async def produce(
    bootstrap: str,
    messages: Iterable[Message],
    *,
    headers: Sequence[tuple[str, bytes]] | None = None,
    linger_ms: int = 5,
) -> int:
    """Send every ``(topic, key, value)`` with ``acks=1`` and no idempotence; return the
    number sent once all are acknowledged. Messages of one topic and key keep their
    order (one producer, one partition per key)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        enable_idempotence=False,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )
    await producer.start()
    try:
        futures = []
        for topic, key, value in messages:
            futures.append(
                await producer.send(
                    topic, value=value, key=key, headers=list(headers) if headers else None
                )
            )
        await producer.flush()
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Consumed:
    """One message read back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def header(self, name: str) -> str | None:
        """A header decoded as UTF-8, or None."""
        raw = self.headers.get(name)
        return raw.decode("utf-8", "replace") if raw is not None else None


async def consume_all(
    bootstrap: str,
    topic: str,
    n: int | None = None,
    *,
    timeout: float = 30.0,
    partitions: int | None = None,
) -> list[Consumed]:
    """Read ``topic`` from the beginning without a consumer group.

    Stops once ``n`` messages are read, or (``n`` None) once every partition is read up
    to the highwater mark of its latest fetch, or when ``timeout`` seconds pass; returns
    what was read, in partition then offset order.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_wait_ms=200,
    )
    await consumer.start()
    out: list[Consumed] = []
    deadline = time.monotonic() + timeout
    try:
        parts: set[int] | None = None
        while parts is None and time.monotonic() < deadline:
            await consumer.topics()  # refreshes metadata: the topic may be new
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await asyncio.sleep(0.2)
        if parts is None:
            return out
        if partitions is not None:
            parts = {p for p in parts if p < partitions}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            batch = await consumer.getmany(*tps, timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for r in records:
                    out.append(
                        Consumed(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key,
                            value=r.value,
                            headers={k: v for k, v in r.headers},
                        )
                    )
            if n is not None:
                if len(out) >= n:
                    break
                continue
            if not batch and await _caught_up(consumer, tps):
                break
    finally:
        await consumer.stop()
    out.sort(key=lambda c: (c.partition, c.offset))
    return out


async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


async def highwaters(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """Highwater mark of every partition of ``topic``, from a fetch (not ListOffsets,
    which Tansu answers wrongly)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await consumer.getmany(*tps, timeout_ms=100, max_records=1)
            marks = {tp.partition: consumer.highwater(tp) for tp in tps}
            if all(m is not None for m in marks.values()):
                return {p: int(m) for p, m in marks.items() if m is not None}
        raise TimeoutError(f"no highwater for every partition of {topic}")
    finally:
        await consumer.stop()

"""Fast asynchronous producing of synthetic events to Kafka.

Used by the ``demo`` command (back history, then a live stream) and for load
generation. Messages are keyed by ``user_id`` so one user's events stay in one partition,
and routed to topics with :func:`stream.demo.generator.topic_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.demo.generator import TOPICS, Event, topic_for

DEFAULT_CHUNK = 4000
"""Messages in flight before the producer waits for their acknowledgements."""


def make_producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted producer tuned for throughput; call ``await p.start()`` on it.

    Defaults: ``acks=1`` and no idempotence (Kafka-compatible test brokers often lack
    idempotent producers, and a demo can afford a rare duplicate, which the processor
    ignores by ``event_id`` anyway), ``linger_ms=5`` so batches fill up, 1 MiB batches
    (``max_batch_size``, bytes) and a 4 MiB ``max_request_size``.

    Args:
        bootstrap: comma-separated ``host:port`` list of brokers.
        overrides: any other :class:`AIOKafkaProducer` keyword, winning over the above.
    """
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "engagement-stream-demo",
        "acks": 1,
        "enable_idempotence": False,
        "linger_ms": 5,
        "max_batch_size": 1_048_576,
        "max_request_size": 4_194_304,
    }
    settings.update(overrides)
    return AIOKafkaProducer(**settings)


def topic_router(topics: Sequence[str] = TOPICS) -> Callable[[str], str]:
    """Event type -> topic among `topics` (the `STREAM_TOPICS` of the worker that will read
    them), so `generate` and `demo` write where the worker reads.

    A given topic named like one of the contract's four keeps that topic's events;
    otherwise the events of the i-th default topic (activity and signups, visits and
    conversions, cancellations, surveys) go to the i-th given topic, wrapping around when
    fewer are given (one topic takes everything). The default list routes as
    :func:`stream.demo.generator.topic_for`.

    Raises:
        ValueError: for no topics.
    """
    given = list(dict.fromkeys(topics))
    if not given:
        raise ValueError("no topics to produce to")
    route = {default: (default if default in given else given[i % len(given)])
             for i, default in enumerate(TOPICS)}

    def topic_of(event_type: str) -> str:
        return route[topic_for(event_type)]

    return topic_of


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str] = TOPICS,
    *,
    partitions: int = 3,
    replication: int = 1,
) -> None:
    """Create ``topics`` that do not exist yet (existing ones are left as they are).

    Args:
        bootstrap: comma-separated ``host:port`` list of brokers.
        topics: topic names (default: the four event topics of the contract).
        partitions: partitions of each new topic (default 3).
        replication: replication factor of each new topic (default 1, a local broker).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="engagement-stream-demo")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing
        ]
        # Another producer or worker may win the race; the topic is there either way.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
    finally:
        await admin.close()


async def produce_events(
    producer: AIOKafkaProducer,
    events: Iterable[Event],
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = DEFAULT_CHUNK,
    topics: Sequence[str] = TOPICS,
) -> int:
    """Send ``events`` as fast as the broker takes them; return how many were sent.

    Sends are queued without waiting for each acknowledgement; every ``chunk`` messages
    (default 4000) the producer waits for the outstanding ones, which keeps memory
    bounded and makes a failed send raise here instead of being lost.

    Args:
        producer: a started producer (see :func:`make_producer`).
        events: contract events; the topic comes from ``type``, the key is ``user_id``.
        progress: called with the running total of acknowledged events after each
            chunk and at the end (default: none).
        chunk: messages in flight before waiting for acknowledgements.
        topics: the topics to write to (see :func:`topic_router`; default: the four
            event topics of the contract).

    Raises:
        aiokafka.errors.KafkaError: if the broker rejects or times out a send.
        ValueError: for an event whose ``type`` has no topic.
    """
    encode = msgspec.json.Encoder().encode
    send = producer.send
    topic_of = topic_router(topics)
    pending: list[asyncio.Future[Any]] = []
    total = 0
    for event in events:
        topic = topic_of(event["type"])
        pending.append(await send(topic, encode(event), key=str(event["user_id"]).encode()))
        if len(pending) >= chunk:
            await asyncio.gather(*pending)
            total += len(pending)
            pending.clear()
            if progress is not None:
                progress(total)
    if pending:
        await asyncio.gather(*pending)
        total += len(pending)
    if progress is not None:
        progress(total)
    return total

"""Producing test messages as real producers do: in record batches of a chosen codec,
with keys, headers, tombstones (also keyless ones, which aiokafka refuses to send) and
values of several megabytes; each message's (topic, partition, offset) is returned, so a
test can find it again, e.g. on the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from confluent_kafka import Producer

#: (topic, key, value, headers)
Full = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
#: Where a message landed: (topic, partition, offset)
Place = tuple[str, int, int]

MAX_BYTES = 8 * 1024 * 1024


async def _produce(bootstrap: str, messages: Sequence[Full], codec: str | None) -> list[Place]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False,
                                linger_ms=20, max_batch_size=256 * 1024,
                                max_request_size=MAX_BYTES, compression_type=codec,
                                request_timeout_ms=30_000)
    await producer.start()
    try:
        futures = [await producer.send(t, value=v, key=k, headers=h or None)
                   for t, k, v, h in messages]
        await producer.flush()
        return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def _produce_rdkafka(bootstrap: str, messages: Sequence[Full], codec: str = "none",
                     one_by_one: bool = False) -> list[Place]:
    """Through librdkafka, in batches of `codec` (its own framing of each codec), or one
    message at a time. librdkafka sends a message with neither key nor value (aiokafka
    does not)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1,
                         "enable.idempotence": False, "compression.codec": codec,
                         "linger.ms": 20, "message.max.bytes": MAX_BYTES,
                         # the partition of a key as aiokafka (and the Java client) choose it
                         "partitioner": "murmur2_random"})
    places: list[Place] = []

    def done(err: object, msg: object) -> None:
        assert err is None, err
        places.append((msg.topic(), msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    for t, k, v, h in messages:
        producer.produce(t, value=v, key=k, headers=h or None, on_delivery=done)
        if one_by_one:
            producer.flush(30)
        else:
            producer.poll(0)
    producer.flush(60)
    assert len(places) == len(messages)
    return places


def produce_groups(bootstrap: str,
                   groups: Sequence[tuple[str | None, Sequence[Full]]]) -> list[Place]:
    """Produce each group in turn (all of a group acknowledged before the next starts, so
    the order of the whole list holds within each partition), a group in batches of its
    codec: aiokafka's batches for None (uncompressed), "gzip", "snappy" (xerial framing),
    "lz4", "zstd"; librdkafka's for "rdkafka:<codec>" (plain snappy); "keyless-null":
    through librdkafka one by one. Returns the place of every message, in order (for
    librdkafka's batches: in delivery order, so only compare them as a set)."""
    places: list[Place] = []
    for codec, messages in groups:
        if not messages:
            continue
        if codec == "keyless-null":
            places += _produce_rdkafka(bootstrap, messages, one_by_one=True)
        elif codec is not None and codec.startswith("rdkafka:"):
            places += _produce_rdkafka(bootstrap, messages, codec.split(":", 1)[1])
        else:
            places += asyncio.run(_produce(bootstrap, messages, codec))
    return places


async def _produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False)
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        await producer.client._wait_on_metadata(topic)
        node = producer.client.cluster.leader_for_partition(TopicPartition(topic, partition))
        response = await producer.client.send(
            node, ProduceRequest(None, 1, 30_000, [(topic, [(partition, batch)])]))
        (_, parts), = response.topics
        (_, error, offset, *_), = parts
        assert error == 0, f"the broker refused the batch: error {error}"
        return int(offset)
    finally:
        await producer.stop()


def produce_raw_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Append `batch` (a record batch's bytes, as they are: a corrupt one too) to the
    partition with a produce request of our own; returns its base offset."""
    return asyncio.run(_produce_raw(bootstrap, topic, partition, batch))

"""The worker's dead-letter producing on a fake producer (broker refusals that are hard
to bring about on a real broker at will): oversized dead letters go out without their
value, tombstones with their key, every dead letter with the original key and headers
beside ours, and a dead-letter topic that keeps refusing makes the worker unhealthy
after bounded retries, without losing or skipping anything. The real broker runs these
cases end to end in tests/faults/test_dead_letters.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from stream.decode import Message
from stream.events import DeadLetter, Unreadable
from stream.kafka import deadletters
from stream.keys import KeySpace
from stream.metrics.health import Health
from stream.settings import Settings
from stream.worker import Worker


class Source:
    """Original keys and headers, by (topic, partition, offset)."""

    def __init__(self, origins: dict[tuple[str, int, int], Any]) -> None:
        self.known = origins

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Any]:
        return {o: self.known[(topic, partition, o)] for o in offsets
                if (topic, partition, o) in self.known}

    def assignment(self) -> set[tuple[str, int]]:
        return {("in", 2)}

    def highwater(self, topic: str, partition: int) -> int | None:
        return 100


class Producer:
    """Refuses the first `refuse` sends of the value `refused` (as a broker that is not
    there), then takes messages up to `limit` bytes (as aiokafka's size check: `send`
    raises) and, with `broker_limit`, refuses larger ones in the acknowledgement (as a
    broker does)."""

    def __init__(self, refuse: int = 0, limit: int = 1 << 30,
                 broker_limit: int = 1 << 30, refused: bytes | None = None) -> None:
        self.refuse = refuse
        self.refused = refused
        self.limit = limit
        self.broker_limit = broker_limit
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[None]:
        assert key is not None or value is not None  # as aiokafka asserts
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers or ())
        if size > self.limit:
            raise MessageSizeTooLargeError(f"{size} bytes")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse and value == self.refused:
            self.refuse -= 1
            done.set_exception(KafkaConnectionError("no broker"))
        elif size > self.broker_limit:
            done.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append({"topic": topic, "key": key, "value": value,
                              "headers": list(headers or [])})
            done.set_result(None)
        return done


class Store:
    keys = KeySpace()
    segments = None
    user_ids = None


def worker(producer: Producer, source: Source) -> Worker:
    return Worker(Settings(dlq_topic="dead"), Store(), source,  # type: ignore[arg-type]
                  producer, Health(CollectorRegistry()))  # type: ignore[arg-type]


def dead(offset: int, value: bytes | None, reason: str = "invalid_json") -> Message:
    return Message("in/2", offset, DeadLetter(reason, "why"), value)


async def within(call: Any) -> None:
    """A dead-letter call that loops (a refusal it does not handle) fails in seconds."""
    await asyncio.wait_for(call, 10)


OURS = ["error", "error_detail", "source_topic", "source_partition", "source_offset"]


async def test_original_key_and_headers_come_first_then_ours() -> None:
    producer = Producer()
    source = Source({("in", 2, 5): (b"user-1", [("trace", b"t1"), ("error", b"theirs")])})
    await within(worker(producer, source)._dead_letter([dead(5, b"{bad"), dead(6, b"{bad2")]))
    first, second = producer.sent
    assert first["key"] == b"user-1" and first["value"] == b"{bad"
    assert first["headers"] == [("trace", b"t1"), ("error", b"theirs"), ("error", b"invalid_json"),
                                ("error_detail", b"why"), ("source_topic", b"in"),
                                ("source_partition", b"2"), ("source_offset", b"5")]
    assert second["key"] is None and [h for h, _ in second["headers"]] == OURS


async def test_tombstones_keep_their_key_and_say_they_were_null() -> None:
    producer = Producer()
    source = Source({("in", 2, 1): (b"k", [])})
    await within(worker(producer, source)._dead_letter([dead(1, None), dead(2, None)]))
    keyed, keyless = producer.sent
    assert (keyed["key"], keyed["value"]) == (b"k", None)
    assert ("dead_letter_value", b"null") in keyed["headers"]
    # Kafka takes no message without key and value: an empty value, and the header
    assert (keyless["key"], keyless["value"]) == (None, b"")
    assert ("dead_letter_value", b"null") in keyless["headers"]


@pytest.mark.parametrize("where", ["client", "broker"])
async def test_too_large_goes_out_without_its_value(where: str) -> None:
    limit = {"limit": 1000} if where == "client" else {"broker_limit": 1000}
    producer = Producer(**limit)  # type: ignore[arg-type]
    source = Source({("in", 2, 7): (b"k7", [("trace", b"t7")]),
                     ("in", 2, 9): (b"K" * 5000, [("trace", b"t9")])})
    w = worker(producer, source)
    await within(w._dead_letter([dead(7, b"x" * 3000), dead(8, b"{small"),
                                 dead(9, b"y" * 3000)]))
    # (a refusal in the broker's acknowledgement is sent again after the others)
    by_offset = {dict(m["headers"])["source_offset"]: m for m in producer.sent}
    assert len(by_offset) == len(producer.sent) == 3
    big, small, huge_key = by_offset[b"7"], by_offset[b"8"], by_offset[b"9"]
    if where == "client":
        assert producer.sent == [big, small, huge_key]
    assert big["value"] is None and big["key"] == b"k7"
    headers = dict(big["headers"])
    assert headers["dead_letter_value"] == (b"omitted: 3000 bytes, too large for the "
                                            b"dead-letter topic")
    assert (headers["source_offset"], headers["trace"]) == (b"7", b"t7")
    assert small["value"] == b"{small" and "dead_letter_value" not in dict(small["headers"])
    # a key too large as well: the original key and headers go too, said in a header
    assert huge_key["key"] is None and huge_key["value"] == b""
    assert dict(huge_key["headers"])["dead_letter_original"].startswith(b"key and headers")
    assert "trace" not in dict(huge_key["headers"])
    assert w.health.dead_letter_values_omitted._value.get() == 2
    assert w.health.live


async def test_a_refusing_topic_makes_the_worker_unhealthy_and_nothing_is_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletters, "DEAD_LETTER_RETRY_SECONDS", 0.01)
    # the first message is refused on every attempt up to the limit, then taken
    producer = Producer(refuse=deadletters.DEAD_LETTER_ATTEMPTS + 2, refused=b"{a")
    w = worker(producer, Source({}))
    task = asyncio.ensure_future(w._dead_letter([dead(1, b"{a"), dead(2, b"{b")]))
    for _ in range(500):
        if not w.health.live:
            break
        await asyncio.sleep(0.01)
    assert not w.health.live and not task.done()
    assert w.health.dead_letter_failing_gauge._value.get() == 1
    w._owned.add(("in", 2))
    await asyncio.sleep(0.5)  # one more retry: the lag is kept up to date meanwhile
    assert w.health.lag_total == 100
    await asyncio.wait_for(task, 30)
    assert w.health.live
    assert w.health.dead_letter_failing_gauge._value.get() == 0
    assert w.health.dead_letter_errors._value.get() == deadletters.DEAD_LETTER_ATTEMPTS + 2
    # each exactly once: a retry sends only what was refused
    assert [m["value"] for m in producer.sent] == [b"{b", b"{a"]


async def test_an_unreadable_batch_names_its_offset_range() -> None:
    producer = Producer()
    batch = Unreadable(b"\x00" * 80, "record batch of offsets 10-14 not readable: x", 10, 14)
    await within(worker(producer, Source({}))._dead_letter(
        [Message("in/2", 14, DeadLetter("unreadable_batch", batch.detail), batch)]))
    (sent,) = producer.sent
    assert sent["value"] == b"\x00" * 80 and sent["key"] is None
    headers = dict(sent["headers"])
    assert (headers["error"], headers["source_offset"], headers["source_last_offset"]) == (
        b"unreadable_batch", b"10", b"14")

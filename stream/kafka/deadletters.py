"""The dead-letter sink: producing the messages the worker rejects to the dead-letter topic.

Used by the worker (and so by `backfill`, which runs the worker's batch path): a batch's
dead letters are produced, and acknowledged by the broker, before the batch is applied to
Redis together with its offsets (see `DeadLetterSink.produce`). Retries, the fallback for
a dead letter too large for the topic, the headers, and the health reporting of a topic
that keeps refusing are all here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from ..decode import Message
from ..events import DeadLetter, Unreadable
from ..metrics.health import Health
from ..settings import Settings
from .config import KafkaConfig
from .fetched import Origin

log = logging.getLogger("stream.worker")

#: Failed attempts to produce a batch's dead letters before the worker reports itself
#: unhealthy (waits between them from DEAD_LETTER_RETRY_SECONDS, doubling up to 10 s:
#: about 7 s in all); it keeps trying meanwhile.
DEAD_LETTER_ATTEMPTS = 5
DEAD_LETTER_RETRY_SECONDS = 0.5
#: The broker's answers to a message larger than the dead-letter topic accepts.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class OriginSource(Protocol):
    """What the sink needs of the worker's `Source`: the original key and headers."""

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        ...


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The dead-letter producer (not started): acknowledged by every in-sync replica, so a
    dead letter is in before the offsets that skip its message are stored."""
    return AIOKafkaProducer(acks="all", linger_ms=5,
                            **KafkaConfig.from_settings(settings).aiokafka())


class DeadLetterSink:
    """Produces dead letters to `settings.dlq_topic` through `producer`, with the original
    key and headers read from `source`, and reports on `health`.

    `between_attempts` runs after each failed attempt, before the wait: the worker's
    raises to give up when it is stopping and keeps the lag up to date meanwhile."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings, health: Health,
                 source: OriginSource,
                 between_attempts: Callable[[], None] | None = None) -> None:
        self.producer = producer
        self.topic = settings.dlq_topic
        self.health = health
        self.source = source
        self._between_attempts = between_attempts
        #: Whether the topic has refused DEAD_LETTER_ATTEMPTS times in a row (unhealthy).
        self.failing = False

    async def produce(self, dead: list[Message]) -> None:
        """Produce dead letters and wait for the broker's acknowledgement before the batch
        is applied: once Redis holds the offsets, these messages are never read again.

        1. A dead letter larger than the dead-letter topic accepts is produced again
           without its value (then without the original key and headers too), with a
           header saying so: the original stays on its source topic at the offset named.
        2. Any other refusal is retried with backoff (a repeat may duplicate a dead
           letter, never lose one), for ever: the batch is not applied until its dead
           letters are in. After DEAD_LETTER_ATTEMPTS failed attempts the worker reports
           itself unhealthy (`/healthz` 503, `engagement_dead_letter_failing` 1) until
           the topic accepts them again. A refusal comes at once; a broker that does not
           answer fails an attempt only after the producer's request timeout (40 s), so
           a short broker outage does not make the worker unhealthy."""
        delay = DEAD_LETTER_RETRY_SECONDS
        attempts = 0
        origins = self._origins(dead)
        pending = dead
        while True:
            pending = await self._send(pending, origins)
            if not pending:
                for m in dead:
                    if type(m.value) is Unreadable:
                        self.health.unreadable_batches.inc()
                if self.failing:
                    self.failing = False
                    self.health.set_dead_letter_failing(False)
                    log.info("the dead-letter topic accepts dead letters again")
                return
            attempts += 1
            if attempts >= DEAD_LETTER_ATTEMPTS and not self.failing:
                self.failing = True
                self.health.set_dead_letter_failing(True)
                log.error("the dead-letter topic %s refused %d dead letters %d times; "
                          "reporting unhealthy and retrying (no partition moves until "
                          "they are in)", self.topic, len(pending), attempts)
            if self._between_attempts is not None:
                self._between_attempts()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _origins(self, dead: list[Message]) -> dict[tuple[str, int], Origin]:
        """(src, offset) -> the original key and headers of each dead letter's message."""
        wanted: dict[str, list[int]] = {}
        for m in dead:
            if type(m.value) is not Unreadable:
                wanted.setdefault(m.src, []).append(m.offset)
        out: dict[tuple[str, int], Origin] = {}
        for src, offsets in wanted.items():
            topic, _, partition = src.rpartition("/")
            try:
                found = self.source.origins(topic, int(partition), offsets)
            except Exception:  # never worth losing the dead letters over
                log.exception("original keys and headers of %s not readable", src)
                continue
            for offset, origin in found.items():
                out[(src, offset)] = origin
        return out

    async def _send(self, dead: list[Message],
                    origins: dict[tuple[str, int], Origin]) -> list[Message]:
        """Produce `dead` (all sent first, in order, then the acknowledgements awaited);
        returns those the broker refused for a reason other than their size."""
        sent = [(m, *await self._produce_fitting(m, origins, 0)) for m in dead]
        failed: list[Message] = []
        for m, attempt, cut in sent:
            while True:
                error = await _refusal(attempt)
                if error is None:
                    if cut:
                        self.health.dead_letter_values_omitted.inc()
                    break
                if isinstance(error, TOO_LARGE) and cut < 2:  # the broker's limit
                    attempt, cut = await self._produce_fitting(m, origins, cut + 1)
                    continue
                self.health.dead_letter_errors.inc()
                log.warning("dead letter of %s@%d refused: %r", m.src, m.offset, error)
                failed.append(m)
                break
        return failed

    async def _produce_fitting(self, m: Message, origins: dict[tuple[str, int], Origin],
                               cut: int) -> tuple[Any, int]:
        """`_produce_one`, cut further while the client's own size limit refuses it:
        (the attempt, the cut it was sent with)."""
        while True:
            attempt = await self._produce_one(m, origins, cut)
            if cut >= 2 or not isinstance(attempt, TOO_LARGE):
                return attempt, cut
            cut += 1

    async def _produce_one(self, m: Message, origins: dict[tuple[str, int], Origin],
                           cut: int) -> Any:
        """Send one dead letter; returns the future of its acknowledgement, or the error
        `send` raised. `cut` 1: its value left out; 2: the original key and headers too.

        Headers: the original message's first, then ours (`error`, `error_detail`,
        `source_topic`, `source_partition`, `source_offset`, and as the case may be
        `source_last_offset`, `dead_letter_value`, `dead_letter_original`): where a name is
        in both, ours is the last one. A null value (a tombstone) stays null when the
        message has a key; a keyless one is produced with an empty value (Kafka takes no
        message without both), and `dead_letter_value: null` says which it was."""
        assert isinstance(m.item, DeadLetter)
        topic, _, partition = m.src.rpartition("/")
        value = m.value
        key, original = origins.get((m.src, m.offset), (None, []))
        first = m.offset
        extra: list[tuple[str, bytes]] = []
        if type(value) is Unreadable:
            first = value.first
            extra.append(("source_last_offset", str(value.last).encode()))
        if value is None:
            extra.append(("dead_letter_value", b"null"))
        elif cut:
            extra.append(("dead_letter_value", f"omitted: {len(value)} bytes, too large for "
                                               "the dead-letter topic".encode()))
            value = None
        if cut == 2:
            extra.append(("dead_letter_original", b"key and headers omitted: too large"))
            key, original = None, []
        if value is None and key is None:
            value = b""
        headers = [
            *original,
            ("error", m.item.reason.encode()),
            ("error_detail", m.item.detail.encode("utf-8", "replace")),
            ("source_topic", topic.encode()),
            ("source_partition", partition.encode()),
            ("source_offset", str(first).encode()),
            *extra,
        ]
        try:
            return await self.producer.send(self.topic, value=value, key=key,
                                             headers=headers)
        except Exception as exc:  # the client's own size limit, no metadata, ...
            return exc


async def _refusal(attempt: Any) -> BaseException | None:
    """The error of a send (`attempt`: its future, or what `send` raised); None: done."""
    if isinstance(attempt, BaseException):
        return attempt
    try:
        await attempt
    except Exception as exc:
        return exc
    return None

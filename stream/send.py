"""`python -m stream send`: produce test messages to Kafka, e.g. one event to see it in
`report` and on /metrics after a first deployment (docs/quickstart.md).

Each argument is one message value. A JSON object without `event_id` gets a fresh one
and one without `ts` gets the current time, so `{"type":"activity","user_id":"me"}` is a
complete event; anything else (`not json`) is sent as it is, to try the dead-letter path.
The key is the object's `user_id`, as the contract recommends.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from .doctor import why
from .kafka.config import KafkaConfig
from .settings import Settings

#: The message sent when no argument is given.
DEFAULT_EVENT = '{"type": "activity", "user_id": "quickstart"}'


def complete(text: str, now: datetime) -> tuple[bytes, bytes | None]:
    """The value and key of the message for the argument `text`."""
    try:
        value = json.loads(text)
    except ValueError:
        return text.encode(), None
    if not isinstance(value, dict):
        return text.encode(), None
    value.setdefault("event_id", f"test-{uuid.uuid4().hex}")
    value.setdefault("ts", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    user = value.get("user_id")
    return json.dumps(value).encode(), (user.encode() if isinstance(user, str) else None)


async def _send(settings: Settings, topic: str, messages: list[tuple[bytes, bytes | None]]
                ) -> list[str]:
    producer = AIOKafkaProducer(acks="all", request_timeout_ms=10_000,
                                **KafkaConfig.from_settings(settings).aiokafka())
    try:
        await asyncio.wait_for(producer.start(), 15)
        lines = []
        for value, key in messages:
            meta = await producer.send_and_wait(topic, value, key=key)
            lines.append(f"sent to {topic} partition {meta.partition} offset {meta.offset}: "
                         f"{value.decode(errors='replace')}")
        return lines
    finally:
        await producer.stop()


def send(settings: Settings, texts: Sequence[str], topic: str | None) -> int:
    """Send `texts` (default: one activity event) to `topic` (default: the first of
    STREAM_TOPICS); print one line per message; 0 when all were acknowledged."""
    target = topic or settings.topic_list[0]
    now = datetime.now(UTC)
    messages = [complete(t, now) for t in (texts or [DEFAULT_EVENT])]
    try:
        lines = asyncio.run(_send(settings, target, messages))
    except Exception as exc:  # one line, not a traceback: the broker or topic is the cause
        print(f"engagement-stream: cannot send to {target} on {settings.kafka_brokers}: "
              f"{why(exc)}")
        return 1
    for line in lines:
        print(line)
    return 0

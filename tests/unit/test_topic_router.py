"""`generate` and `demo` write where the worker reads: events routed onto the topics
given (`STREAM_TOPICS` / `--topics`) by the documented rule."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from stream.demo.generator import EventModel
from stream.demo.producer import produce_events, topic_router

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
TYPES = ("activity", "signup", "visit", "conversion", "cancellation", "survey")


@pytest.mark.parametrize(("topics", "expected"), [
    # the contract's four: unchanged routing
    (("engagement.activity", "engagement.conversions", "engagement.cancellations",
      "engagement.surveys"),
     {"activity": "engagement.activity", "signup": "engagement.activity",
      "visit": "engagement.conversions", "conversion": "engagement.conversions",
      "cancellation": "engagement.cancellations", "survey": "engagement.surveys"}),
    # one topic takes everything
    (("events",), dict.fromkeys(TYPES, "events")),
    # by position, wrapping around
    (("a", "b"), {"activity": "a", "signup": "a", "visit": "b", "conversion": "b",
                  "cancellation": "a", "survey": "b"}),
    (("p", "q", "r", "s", "t"), {"activity": "p", "signup": "p", "visit": "q",
                                 "conversion": "q", "cancellation": "r", "survey": "s"}),
    # a topic named like a default keeps that topic's events
    (("mine", "engagement.surveys"),
     {"activity": "mine", "signup": "mine", "visit": "engagement.surveys",
      "conversion": "engagement.surveys", "cancellation": "mine",
      "survey": "engagement.surveys"}),
])
def test_routing(topics: tuple[str, ...], expected: dict[str, str]) -> None:
    route = topic_router(topics)
    assert {t: route(t) for t in TYPES} == expected


def test_no_topics_is_refused() -> None:
    with pytest.raises(ValueError):
        topic_router(())


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_history_goes_to_the_given_topics() -> None:
    events = list(EventModel(users=200, seed=1).history(NOW, days=5))
    producer = FakeProducer()
    await produce_events(producer, events, topics=("a", "b"))  # type: ignore[arg-type]
    assert len(producer.sent) == len(events)
    for topic, value in producer.sent:
        etype = json.loads(value)["type"]
        assert topic == ("b" if etype in ("visit", "conversion", "survey") else "a")

"""Fault 7: hostile input. Fuzzed with hypothesis: random bytes, random JSON, events with
every field replaced by boundary values and wrong types, 1 MB strings, deep nesting,
invalid UTF-8, NaN and huge numbers, negative and absurd timestamps.

Properties: the decoder never raises; its verdict (the event, or the dead-letter reason)
is the brute-force oracle's, so everything invalid is dead-lettered with its reason and
nothing valid is lost; decoding a stream of huge messages keeps memory bounded. An
end-to-end run pushes a hostile corpus through a real worker.
"""

from __future__ import annotations

import json
import math
import random
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream.demo.localservers import RedisServer, TansuBroker
from stream.events import DeadLetter, Event, decode
from tests.faults.harness import (
    assert_dead_letter_topic,
    assert_exact,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    produce_all,
    truth_of,
    wait_applied,
    wait_lag_zero,
)
from tests.support import oracle
from tests.support.kafka import Topics
from tests.support.workers import WorkerProcess

NOW = datetime.now(UTC).replace(microsecond=0)
NOW_MS = int(NOW.timestamp() * 1000)
LATENESS_MS = 400 * 86_400_000
MB = 1_000_000

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def verdict(value: bytes | None) -> tuple[str, Any]:
    """The decoder's verdict; it must never raise."""
    got = decode(value, NOW_MS, LATENESS_MS)
    if isinstance(got, DeadLetter):
        assert got.reason and got.detail
        return "dead", got.reason
    assert isinstance(got, Event)
    return "event", (got.event_id, got.type, got.user_id, got.ts_ms, got.campaign,
                     got.survey, got.score)


def expected(value: bytes | None) -> tuple[str, Any]:
    try:
        checked = oracle.check(value, NOW)
    except RecursionError:
        # Nesting deeper than a parser accepts (RFC 8259 section 9 lets a parser limit
        # the depth): the message is not JSON this processor can read.
        return "dead", "invalid_json"
    if checked.event is None:
        return "dead", checked.reason
    e = checked.event
    return "event", (e.event_id, e.type, e.user_id, e.ts_ms, e.campaign, e.survey, e.score)


def assert_agrees(value: bytes | None) -> None:
    assert verdict(value) == expected(value), value[:300] if value else value


# -- strategies ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

strings = st.one_of(
    st.text(max_size=300), st.sampled_from(["", " ", "x" * 128, "x" * 129, "u" * 256,
                                            "u" * 257, "\ud800", "\x00", "é" * 200]),
)
timestamps = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=NOW_MS - LATENESS_MS - 5000, max_value=NOW_MS + 400_000),
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**64, NOW_MS, NOW_MS + 300_000,
                     NOW_MS + 300_001, NOW_MS - LATENESS_MS, NOW_MS - LATENESS_MS - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["2026-11-22T10:00:00Z", "0000-01-01T00:00:00Z",
                     "9999-12-31T23:59:59.999999999+14:00", "2026-11-22T10:00:00+25:00",
                     "2026-11-22t10:00:00z", "2026-11-22T24:00:00Z", "-2026-01-01T00:00:00Z",
                     "2026-02-29T00:00:00Z", "2024-02-29T00:00:00-12:00"]),
    strings, json_values,
)
types = st.one_of(st.sampled_from(oracle.EVENT_TYPES), strings, json_values)
scores = st.one_of(st.integers(min_value=-3, max_value=12), st.integers(), json_values)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-valid events with any field missing, wrong or at a boundary."""
    obj: dict[str, Any] = {
        "event_id": draw(st.one_of(st.uuids().map(str), strings, json_values)),
        "type": draw(types),
        "user_id": draw(st.one_of(st.text(min_size=1, max_size=20), strings, json_values)),
        "ts": draw(timestamps),
    }
    if draw(st.booleans()):
        obj["campaign"] = draw(st.one_of(st.sampled_from(["spring", "Spring"]), strings,
                                         json_values))
    if draw(st.booleans()):
        obj["survey"] = draw(st.one_of(st.sampled_from(["nps", "csat", "NPS"]), json_values))
    if draw(st.booleans()):
        obj["score"] = draw(scores)
    if draw(st.booleans()):
        obj["props"] = draw(st.one_of(st.dictionaries(st.text(max_size=10), strings),
                                      json_values))
    for name in draw(st.lists(st.sampled_from(list(obj)), max_size=2)):
        obj.pop(name, None)
    return obj


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


# -- properties ------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=400))
@example(b"\xff\xfe")
@example(b'{"event_id": "\xc3\x28"}')
@example(b"\xef\xbb\xbf{}")
def test_random_bytes(value: bytes) -> None:
    assert_agrees(value)


@FUZZ
@given(json_values)
def test_random_json(value: Any) -> None:
    assert_agrees(dumps(value))


@FUZZ
@given(events())
def test_events_with_hostile_fields(obj: dict[str, Any]) -> None:
    assert_agrees(dumps(obj))


@FUZZ
@given(events(), st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_corrupted_events(obj: dict[str, Any], at: int, junk: bytes) -> None:
    raw = dumps(obj)
    at = min(at, len(raw))
    assert_agrees(raw[:at] + junk + raw[at:])
    assert_agrees(raw[:at])


def valid(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "type": "activity", "user_id": "u1", "ts": NOW_MS - 1000,
            **fields}


HUGE = [
    dumps(valid(event_id="e" * MB)),
    dumps(valid(user_id="u" * MB)),
    dumps(valid(type="t" * MB)),
    dumps(valid(ts="2" * MB)),
    dumps(valid(props={"blob": "x" * MB})),                       # valid: props is free text
    dumps(valid(type="visit", campaign="c" * MB)),                # valid: no length limit
    dumps(valid(extra=["y" * 1000] * 1000)),                      # ignored extra field
    b"[" * 200_000 + b"]" * 200_000,                               # deep nesting
    b'{"event_id": "e1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b"9" * MB,                                                     # a 1 MB number
    dumps(valid(ts=int("9" * 400))),
    dumps(valid(type="survey", survey="nps", score=10**400)),
    dumps(valid(ts=float("nan"))),
    dumps(valid(ts=1e308)),
    dumps(valid(ts=-(10**30))),
    b"\x80" * MB,                                                  # invalid UTF-8
    b'{"event_id": "' + b"\xed\xa0\x80" * 1000 + b'"}',             # UTF-8 surrogates
    b" " * MB,
    b"\x00" * 1000,
]


@pytest.mark.parametrize("value", HUGE, ids=range(len(HUGE)))
def test_huge_and_deep_values(value: bytes) -> None:
    assert_agrees(value)


def test_memory_stays_bounded() -> None:
    """Decoding a stream of 1 MB hostile messages keeps nothing: the peak stays near the
    size of one message, not of the stream."""
    stream = HUGE * 5
    decode(HUGE[0], NOW_MS, LATENESS_MS)  # warm-up (caches, lazy imports)
    tracemalloc.start()
    try:
        for value in stream:
            decode(value, NOW_MS, LATENESS_MS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = sum(len(v) for v in stream)
    assert total > 40 * MB
    assert peak < 12 * MB, peak


def test_nan_and_infinity_are_invalid_json() -> None:
    for value in (b"NaN", b'{"ts": NaN}', b'{"event_id":"e","type":"activity","user_id":"u",'
                  b'"ts":1,"x":-Infinity}'):
        assert verdict(value) == ("dead", "invalid_json")
    assert not math.isnan(0.0)


def hostile_corpus(seed: int, n: int) -> list[bytes]:
    """Deterministic hostile messages for the end-to-end run (Kafka-sized)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(1, 200)))
        elif kind == 1:
            out.append(dumps(valid(event_id=f"h{i}", ts=rng.choice(
                [-1, 0, 2**62, NOW_MS + 10**9, "yesterday", None, 1.5]))))
        elif kind == 2:
            out.append(dumps(valid(event_id=f"h{i}", user_id=rng.choice(
                [5, "", None, ["u"], "u" * 257]))))
        elif kind == 3:
            out.append(b"[" * rng.randrange(10, 900))  # deeper: see test_huge_and_deep_values
        elif kind == 4:
            out.append(dumps(valid(event_id=f"h{i}", type="survey", survey="nps",
                                   score=rng.choice([11, -1, 10**30, "9", 9.5, True]))))
        else:
            raw = dumps(valid(event_id=f"h{i}", user_id=f"hostile-{i}"))
            cut = rng.randrange(1, len(raw))
            out.append(raw[:cut] + rng.randbytes(2) + raw[cut:])
    out += [dumps(valid(event_id="big-e", props={"blob": "x" * 900_000})),
            dumps(valid(event_id="e" * 900_000)), b"\x80" * 900_000]
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hostile_stream_through_a_worker(broker: TansuBroker, redis_server: RedisServer,
                                         topics: Topics) -> None:
    base = make_dataset(topics, 4_000, seed=8)
    rng = random.Random(9)
    messages = list(base.messages)
    for value in hostile_corpus(10, 3_000):
        messages.insert(rng.randrange(len(messages) + 1), (rng.choice(topics.inputs), None,
                                                           value))
    truth = truth_of(messages, base.now, base.timezone)
    assert sum(truth.dead_letters.values()) > 2_500
    produce_all(broker.bootstrap, messages)
    worker = WorkerProcess(env_for(broker.bootstrap, redis_server.url, topics, truth)).start()
    with logged_workers(worker):
        wait_applied(redis_server.url, input_highwaters(broker.bootstrap, topics), 120)
        wait_lag_zero([worker])
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)
        assert_dead_letter_topic(broker.bootstrap, topics, truth)
        assert worker.stop() == 0
        assert "Traceback" not in worker.log()

"""Decoding and validation of single messages (contract section 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import events
from stream.events import DeadLetter, Event, decode, parse_ts

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_MS = 1795348800000  # 2026-11-22T12:00:00Z, worked out independently of the code
LATE_MS = 400 * 86_400_000


def msg(**fields: object) -> bytes:
    base: dict[str, object] = {"event_id": "e1", "type": "activity", "user_id": "u1",
                               "ts": "2026-11-22T10:00:00Z"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def reason(value: bytes | None) -> str:
    out = decode(value, NOW_MS, LATE_MS)
    return out.reason if isinstance(out, DeadLetter) else "ok"


def test_now_constant_matches_datetime() -> None:
    assert int(NOW.timestamp() * 1000) == NOW_MS


def test_valid_activity_string_and_int_ts() -> None:
    a = decode(msg(), NOW_MS, LATE_MS)
    b = decode(msg(ts=NOW_MS - 2 * 3_600_000), NOW_MS, LATE_MS)
    assert isinstance(a, Event) and isinstance(b, Event)
    assert a.ts_ms == b.ts_ms == NOW_MS - 7_200_000
    assert a.type == "activity"


@pytest.mark.parametrize("ts,expected_ms", [
    ("2026-11-22T10:00:00Z", NOW_MS - 7_200_000),
    ("2026-11-22T11:00:00+01:00", NOW_MS - 7_200_000),
    ("2026-11-22T05:30:00-04:30", NOW_MS - 7_200_000),
    ("2026-11-22T10:00:00.123456Z", NOW_MS - 7_200_000 + 123),
])
def test_rfc3339_offsets(ts: str, expected_ms: int) -> None:
    assert parse_ts(ts) == expected_ms


@pytest.mark.parametrize("ts", ["2026-11-22 10:00:00Z", "2026-11-22T10:00:00", "20261122T100000Z",
                                "2026-11-22T10:00Z", "2026-11-22T10:00:00+0100", "yesterday",
                                "2026-13-22T10:00:00Z"])
def test_bad_ts_strings_are_invalid(ts: str) -> None:
    assert reason(msg(ts=ts)) == "invalid_event"


@pytest.mark.parametrize("value,expected", [
    (None, "invalid_json"), (b"", "invalid_json"), (b"not json", "invalid_json"),
    (b"NaN", "invalid_json"), (b'{"a": Infinity}', "invalid_json"), (b"\xff\xfe", "invalid_json"),
    (b'{"event_id":"e\xff","type":"activity","user_id":"u","ts":1}', "invalid_json"),
    (b"null", "invalid_event"), (b"[1,2]", "invalid_event"), (b'"text"', "invalid_event"),
    (b"{}", "invalid_event"), (b"[1, 2", "invalid_json"), (b"{}{}", "invalid_json"),
    (b'{"a": 1} trailing', "invalid_json"), (b'"unterminated', "invalid_json"),
])
def test_not_json_vs_not_an_event(value: bytes | None, expected: str) -> None:
    assert reason(value) == expected


@pytest.mark.parametrize("fields", [
    {"event_id": ...}, {"event_id": None}, {"event_id": ""}, {"event_id": "x" * 129},
    {"user_id": ...}, {"user_id": 5}, {"user_id": "u" * 257}, {"type": "login"},
    {"type": "Activity"}, {"ts": 1.5e12}, {"ts": True}, {"ts": None},
    {"props": {"plan": 3}}, {"props": []},
    {"type": "visit"}, {"type": "visit", "campaign": ""}, {"type": "conversion", "campaign": 7},
    {"type": "survey", "survey": "nps"}, {"type": "survey", "score": 5},
    {"type": "survey", "survey": "NPS", "score": 5},
    {"type": "survey", "survey": "nps", "score": 11},
    {"type": "survey", "survey": "nps", "score": -1},
    {"type": "survey", "survey": "csat", "score": 0},
    {"type": "survey", "survey": "csat", "score": 6},
    {"type": "survey", "survey": "csat", "score": 4.0},
    {"type": "survey", "survey": "csat", "score": "4"},
])
def test_invalid_events(fields: dict[str, object]) -> None:
    assert reason(msg(**fields)) == "invalid_event"


@pytest.mark.parametrize("fields", [
    {"campaign": 5}, {"survey": []}, {"score": "x"}, {"props": None}, {"extra": {"deep": [1]}},
    {"event_id": "x" * 128}, {"user_id": "u" * 256},
    {"type": "survey", "survey": "nps", "score": 0, "campaign": None},
    {"type": "survey", "survey": "csat", "score": 5},
    {"type": "visit", "campaign": "spring", "score": "ignored"},
])
def test_fields_that_do_not_apply_are_ignored(fields: dict[str, object]) -> None:
    assert reason(msg(**fields)) == "ok"


def test_late_and_future_bounds() -> None:
    assert reason(msg(ts=NOW_MS - LATE_MS)) == "ok"
    assert reason(msg(ts=NOW_MS - LATE_MS - 1)) == "late"
    assert reason(msg(ts=NOW_MS + 300_000)) == "ok"
    assert reason(msg(ts=NOW_MS + 300_001)) == "future"
    assert reason(msg(ts=-5)) == "late"
    assert reason(msg(ts=10**30)) == "future"


def test_malformed_and_late_is_invalid_event() -> None:
    assert reason(msg(type="survey", survey="nps", score=99, ts=0)) == "invalid_event"


@given(st.binary(max_size=300))
def test_decoder_never_raises_on_bytes(value: bytes) -> None:
    out = decode(value, NOW_MS, LATE_MS)
    assert isinstance(out, Event | DeadLetter)


_json = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                         children, max_size=4),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["event_id", "type", "user_id", "ts", "campaign", "survey",
                                        "score", "props"]), _json))
def test_decoder_never_raises_on_json_objects(obj: dict[str, object]) -> None:
    out = decode(json.dumps(obj).encode(), NOW_MS, LATE_MS)
    assert isinstance(out, Event | DeadLetter)
    if isinstance(out, DeadLetter):
        assert out.reason in ("invalid_event", "late", "future")


def test_deep_nesting_is_rejected_not_raised() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert reason(deep) in ("invalid_json", "invalid_event")


def test_named_type_codes_match_the_contract_order() -> None:
    """Each named constant is the code its type's name decodes to (the contract's order,
    written out here rather than read from TYPE_CODES)."""
    named = {"activity": events.ACTIVITY, "signup": events.SIGNUP, "visit": events.VISIT,
             "conversion": events.CONVERSION, "cancellation": events.CANCELLATION,
             "survey": events.SURVEY}
    assert named == {"activity": 0, "signup": 1, "visit": 2, "conversion": 3,
                     "cancellation": 4, "survey": 5}
    for name, code in named.items():
        assert type(code) is int
        value = msg(type=name, campaign="c", survey="nps", score=9)
        got = events.decode(value, NOW_MS, 86_400_000)
        assert isinstance(got, events.Event) and got.type_code == code, name

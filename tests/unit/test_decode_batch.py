"""`decode_batch` is `decode` mapped over the values, for every input (contract section 1).

The batch decoder joins the values into one JSON array, so the dangerous inputs are the
ones that would make that array parse yet hand one value's content to another: a value
that opens a string which swallows the next separator, a value holding two elements, and
whitespace that shifts where an element starts. The property test mixes them with every
kind of valid event; the examples pin the cases that need one exact arrangement.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import events
from stream.events import DeadLetter, Event, decode, decode_batch, parse_ts

NOW_MS = 1795348800000  # 2026-11-22T12:00:00Z
LATE_MS = 400 * 86_400_000
MINUTE_MS = 60_000


def one_by_one(values: list[bytes | None]) -> list[Event | DeadLetter]:
    return [decode(v, NOW_MS, LATE_MS) for v in values]


def assert_same(values: list[bytes | None]) -> None:
    got = decode_batch(values, NOW_MS, LATE_MS)
    want = one_by_one(values)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        # Struct equality compares every field: Event fields, DeadLetter reason and detail.
        assert type(g) is type(w) and g == w, (i, values[i], g, w)


def event(kind: str = "activity", i: int = 0, **fields: object) -> bytes:
    base: dict[str, object] = {"event_id": f"e{i}", "type": kind, "user_id": f"u{i}",
                               "ts": NOW_MS - 3_600_000}
    base.update(fields)
    return json.dumps(base, separators=(",", ":")).encode()


def valid(n: int) -> list[bytes | None]:
    return [event(i=i) for i in range(n)]


# -- strategies ------------------------------------------------------------------------

_ts_int = st.one_of(
    st.integers(NOW_MS - LATE_MS - 2 * MINUTE_MS, NOW_MS + 10 * MINUTE_MS),
    st.sampled_from([NOW_MS - LATE_MS, NOW_MS - LATE_MS - 1, NOW_MS + 300_000,
                     NOW_MS + 300_001, -5, 0, 10**30]),
)


@st.composite
def _ts_str(draw: st.DrawFn) -> str:
    ms = draw(st.integers(NOW_MS - LATE_MS - MINUTE_MS, NOW_MS + 10 * MINUTE_MS))
    hours = draw(st.sampled_from([0, 2, -4, 14]))
    shifted = ms + hours * 3_600_000
    days, rem = divmod(shifted, 86_400_000)
    from datetime import UTC, datetime, timedelta
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=days, milliseconds=rem)
    offset = draw(st.sampled_from(["Z", "z"])) if hours == 0 else (
        f"{'+' if hours > 0 else '-'}{abs(hours):02d}:00")
    frac = draw(st.sampled_from(["", f".{rem % 1000:03d}", ".5", ".123456", "."]))
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + frac + offset
    # Now and then a near miss: a bad second, no offset, a space, a bad month.
    bad = draw(st.sampled_from([None] * 6 + [(17, "6"), (10, " "), (5, "1"), (18, "x")]))
    if bad is not None:
        pos, char = bad
        text = text[:pos] + char + text[pos + 1:]
    return text


_props = st.one_of(st.none(), st.just(...), st.dictionaries(
    st.text(max_size=5), st.text(max_size=5), max_size=3), st.just({"plan": 3}))


@st.composite
def _event(draw: st.DrawFn, clean: bool = False) -> bytes:
    """An event, valid or not; `clean` leaves out the schema errors and bad padding, so
    that runs of them take the array path."""
    kind = draw(st.sampled_from(list(events.EVENT_TYPES) + ([] if clean else ["login"])))
    fields: dict[str, object] = {
        "event_id": draw(st.sampled_from(["e1", "e2", "ü"] + ([] if clean else ["", "x" * 129]))),
        "type": kind,
        "user_id": draw(st.sampled_from(["u1", "u2", "ünï"] + ([] if clean else [5]))),
        "ts": draw(st.one_of(_ts_int, _ts_str())),
    }
    props = draw(_props)
    if props is not ...:
        fields["props"] = props
    if kind == "survey" or draw(st.booleans()):
        fields["survey"] = draw(st.sampled_from(["nps", "csat", "NPS", None, 3, ""]))
        fields["score"] = draw(st.one_of(st.integers(-2, 12), st.sampled_from([None, "4", 4.0])))
    if kind in ("visit", "conversion") or draw(st.booleans()):
        fields["campaign"] = draw(st.sampled_from(["spring", "", None, 7, ["x"]]))
    if draw(st.booleans()):
        fields["extra"] = {"deep": [1, "two", None]}
    keys = draw(st.permutations(list(fields)))
    drop = None if clean else draw(
        st.sampled_from([None, None, None, "event_id", "ts", "user_id", "type"]))
    text = json.dumps({k: fields[k] for k in keys if k != drop},
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
                      ensure_ascii=draw(st.booleans()))
    pad = draw(st.sampled_from(["", "", "", " ", "\n", "\t \r\n"] + ([] if clean else ["\x0c"])))
    return (pad + text + draw(st.sampled_from(["", "", pad]))).encode()


#: Fragments that try to make the joined array parse with content shifted between values.
INJECTIONS: list[bytes | None] = [
    b"", None, b" ", b"\n", b"[", b"]", b",", b"1] , [2", b"{}", b"{},{}", b"{} , {}",
    b'{"a":"', b'"}', b'{"a":"}', b'{"}', b'"', b"[1", b"2]", b"],[", b"null", b"1",
    b'"text"', b"[1,2]", b"{}{}", b"not json", b"NaN", b'{"a": Infinity}', b"\xff\xfe",
    b"\xc3", b"\xa9", b"\xc3\xa9", b'{"x":"\xc3\xa9"}', b"[" * 50 + b"]" * 50,
    b"\x0c{}", b'{"a": 1} trailing', b'"unterminated',
    # Valid events glued together, or split open at the separator.
    event(i=90) + b"," + event(i=91),
    event(i=92) + b" , " + event(i=93),
    event(i=94)[:-1] + b',"p":"',
    b'"}',
    event(i=95)[:-1] + b',"p":"}',
    # Invalid UTF-8 in a field the decoder skips, and in a value.
    event(i=96)[:-1] + b',"extra":"\xff"}',
    event(i=97).replace(b'"u97"', b'"u\xff"'),
    event(i=98)[:-1] + b',"extra":"\xc3"}',
]


@st.composite
def _value(draw: st.DrawFn) -> bytes | None:
    choice = draw(st.integers(0, 9))
    if choice < 6:
        return draw(_event())
    if choice < 8:
        return draw(st.sampled_from(INJECTIONS))
    if choice == 8:
        return draw(st.binary(max_size=40))
    # A valid event with a fragment around it.
    return draw(st.sampled_from([b"", b",", b"{},", b'"', b" "])) + draw(_event()) + draw(
        st.sampled_from([b"", b",{}", b'"', b"]", b" "]))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_value(), max_size=60))
def test_batch_equals_one_by_one(values: list[bytes | None]) -> None:
    assert_same(values)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event(clean=True), min_size=8, max_size=40), st.data())
def test_valid_runs_with_one_intruder(values: list[bytes | None], data: st.DataObject) -> None:
    # Mostly valid batches, as in production: the array path runs, then splits around
    # the intruder; every element must still line up with its own value.
    where = data.draw(st.integers(0, len(values)))
    intruder = data.draw(st.sampled_from(INJECTIONS))
    assert_same([*values[:where], intruder, *values[where:]])


# -- examples --------------------------------------------------------------------------


def test_valid_batch_takes_the_array_path() -> None:
    values = valid(20)
    assert events._wires(values) is not None
    assert_same(values)


def test_string_swallowing_a_separator_is_not_misattributed() -> None:
    # Joined: [{...,"p":","},{...},{...}]: three elements from three values, but the
    # first two values are each invalid and the third holds two events.
    head = event(i=1)[:-1] + b',"p":"'
    tail = b'"}'
    pair = event(i=2) + b"," + event(i=3)
    values: list[bytes | None] = [head, tail, pair, *valid(8)]
    joined = b"[" + b",".join(values) + b"]"  # type: ignore[arg-type]
    assert len(json.loads(joined)) == len(values)  # the array alone would be fooled
    assert events._wires(values) is None
    got = decode_batch(values, NOW_MS, LATE_MS)
    assert [type(x) for x in got[:3]] == [DeadLetter] * 3
    assert_same(values)


def test_same_total_length_is_not_enough() -> None:
    # The total length (and so the total whitespace) matches the one-per-value layout:
    # only the per-element lengths reveal the shift.
    values: list[bytes | None] = [event(i=1)[:-1] + b',"p":"}', b'{"}', b"{} , {}", *valid(8)]
    joined = b"[" + b",".join(values) + b"]"  # type: ignore[arg-type]
    assert len(json.loads(joined)) == len(values)
    assert_same(values)


def test_padded_values_take_the_array_path() -> None:
    values: list[bytes | None] = [b" " + v + b"\n" for v in valid(10)]  # type: ignore[operator]
    assert events._wires(values) is not None
    assert_same(values)


def test_form_feed_is_not_json_whitespace() -> None:
    assert_same([b"\x0c" + v for v in valid(10)])  # type: ignore[operator]


@pytest.mark.parametrize("intruder", [None, b"", b" ", b"]", b"[", b"1] , [2", b"\xff",
                                      event(i=5)[:-1] + b',"extra":"\xff"}'])
def test_one_bad_value_in_a_large_batch(intruder: bytes | None) -> None:
    values = valid(1000)
    values[537] = intruder
    got = decode_batch(values, NOW_MS, LATE_MS)
    assert isinstance(got[537], DeadLetter)
    assert all(isinstance(x, Event) for i, x in enumerate(got) if i != 537)
    assert_same(values)


def test_utf8_split_across_values_is_invalid_in_both() -> None:
    # "é" is \xc3\xa9: halves in neighbouring values must not join across the comma.
    values: list[bytes | None] = [event(i=1)[:-1] + b',"x":"\xc3', b'\xa9"}', *valid(8)]
    assert_same(values)


def test_small_and_empty_batches() -> None:
    assert decode_batch([], NOW_MS, LATE_MS) == []
    for n in range(1, 10):
        assert_same(valid(n))


def test_every_kind_of_event_and_time_check() -> None:
    values: list[bytes | None] = [
        event("activity", 1, ts="2026-11-22T10:00:00Z"),
        event("signup", 2, ts="2026-11-22T11:00:00.5+01:00", props={"plan": "pro"}),
        event("visit", 3, campaign="spring"), event("conversion", 4),
        event("cancellation", 5, ts=NOW_MS - LATE_MS - 1),
        event("survey", 6, survey="nps", score=10), event("survey", 7, survey="csat", score=6),
        event("activity", 8, ts=NOW_MS + 300_001),
        event("survey", 9, survey="nps", score=99, ts=0),
        event("activity", 12, ts=NOW_MS - LATE_MS), event("signup", 13, ts=NOW_MS + 300_000),
        event("cancellation", 14, ts=NOW_MS - LATE_MS - 1),
        event("login", 10), event("activity", 11, ts="yesterday"),
    ]
    got = decode_batch(values, NOW_MS, LATE_MS)
    assert [x.reason if isinstance(x, DeadLetter) else "ok" for x in got] == [
        "ok", "ok", "ok", "invalid_event", "late", "ok", "invalid_event", "future",
        "invalid_event", "ok", "ok", "late", "invalid_event", "invalid_event"]
    assert_same(values)


# -- the `ts` fast path ----------------------------------------------------------------

_REFERENCE = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def reference_ts(value: str) -> int | None:
    """`parse_ts` as it was before the cached fast path: the regex, then datetime."""
    from datetime import datetime
    m = _REFERENCE.fullmatch(value)
    if m is None:
        return None
    minute, sec, frac, offset = m.groups()
    try:
        base = datetime.fromisoformat(f"{minute}:00{offset}".upper())
    except ValueError:
        return None
    if int(sec) > 59:
        return None
    epoch = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    ms = (base - epoch) // datetime.resolution // 1000
    return int(ms) + int(sec) * 1000 + (int(frac[:3].ljust(3, "0")) if frac else 0)


_ts_like = st.builds(
    lambda minute, mid, offset: minute + mid + offset,
    st.sampled_from(["2026-11-22T10:00", "2026-11-22t23:59", "2026-02-29T10:00",
                     "2024-02-29T00:00", "0000-01-01T00:00", "2026-11-22T10:0"]),
    st.one_of(st.sampled_from([":00", ":59", ":60", ":99", ":5", ":0x", ":00.", ":00.1",
                               ":00.12", ":00.123", ":00.1234", ":0\u0663", ":00.\u0661", ""]),
              st.text(alphabet=":.0123456789x", max_size=8)),
    st.sampled_from(["Z", "z", "+02:00", "-04:30", "+24:00", "+00:99", "", "+0200", "Zz"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_ts_like, min_size=1, max_size=5))
def test_parse_ts_matches_the_regex_reference(values: list[str]) -> None:
    # Twice each: the second call meets its minute in the cache (the fast path).
    for value in values + values:
        assert parse_ts(value) == reference_ts(value), value

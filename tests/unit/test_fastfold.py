"""The compiled fold of plain activity messages (stream/_fastfold.c) against the pure
Python decode and fold it stands in for: on any batch, the same writes.

Batches mix plain activity events in every syntactic variant the shortcut takes or must
refuse (field order, whitespace, `ts` shapes, props, escapes, extra or repeated fields,
bad dates, out-of-window times), other event types, bad input, redeliveries below the
applied offsets and (user, day) pairs already known.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import _compiled
from stream import stages as fold_module
from stream.decode import Prepared
from stream.fold import FoldContext
from stream.keys import KeySpace
from stream.stages import fold_prepared
from stream.store.wire import BatchWrites
from stream.timebuckets import DayMapper


def test_the_compiled_fold_is_built() -> None:
    """scripts/install.sh installs a compiler: without the extension every message would
    take the Python path, and the tests below would be skipped."""
    assert fold_module.compiled_fold_available()


needs_extension = pytest.mark.skipif(fold_module._fastfold is None,
                                     reason="the compiled fold is not built")

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LATENESS_MS = 400 * 86_400_000
USERS = [f"user-{i}" for i in range(6)] + ["ü-non-ascii", "quote\"d"]


def _rfc3339(ts_ms: int, variant: int, frac_digits: int) -> str:
    t = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if variant == 1:
        t = t.astimezone(timezone(timedelta(hours=2)))
    elif variant == 2:
        t = t.astimezone(timezone(-timedelta(hours=5, minutes=30)))
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if frac_digits:
        s += "." + f"{t.microsecond:06d}{ts_ms % 7}"[:frac_digits]
    off = t.strftime("%z")
    return s + ("Z" if variant == 0 else f"{off[:3]}:{off[3:]}")


@st.composite
def _ts(draw: st.DrawFn) -> Any:
    age_ms = draw(st.one_of(
        st.integers(0, 50 * 86_400_000),
        st.sampled_from([LATENESS_MS, LATENESS_MS + 1, -5 * 60_000, -5 * 60_000 - 1,
                         -10 * 60_000, 60 * 86_400_000])))
    ts_ms = NOW_MS - age_ms
    shape = draw(st.integers(0, 12))
    if shape <= 4:
        return ts_ms
    if shape <= 9:
        return _rfc3339(ts_ms, shape % 3, draw(st.sampled_from([0, 1, 3, 6, 7])))
    return draw(st.sampled_from([
        "2026-02-30T10:00:00Z", "2026-13-01T10:00:00Z", "2026-11-20T24:00:00Z",
        "2026-11-20T10:00:60Z", "2026-11-20t10:00:00z", "2026-11-20T10:00:00+24:00",
        "2026-11-20T10:00:00+05:75", "2026-11-20T10:00:00", "2026-11-20T10:00:00.Z",
        "2024-02-29T23:59:59.999+01:00", "0000-01-01T00:00:00Z", 1.5e12, -1, True,
        "2026-11-21T10:00:00.123456789-00:00"]))


_RAW = st.sampled_from([
    b"", b"{", b"[]", b"null", b'{"event_id":"x","type":"activity","user_id":"u","ts":0123}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000.0}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,"ts":1}',
    b'{"event_id":"x","type":"activ\\u0069ty","user_id":"u","ts":1763812800000}',
    b'{"event_id":"x","type":"activity","user_id":"a\\"b","ts":1763812800000}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,"extra":[1]}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,"score":7}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000}{}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,}',
    b'{"event_id":"x","type":"activity","user_id":"\xff","ts":1763812800000}',
    b' \t{"event_id":"x" , "type" : "activity","user_id":"u","ts":1763812800000}\r\n',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,"props":{"a":1}}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,"props":[]}',
    b'{"event_id":"x","type":"activity","user_id":"u","ts":1763812800000,"props":{}}',
    None,
])


@st.composite
def _value(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(_RAW)
    user = draw(st.sampled_from(USERS))
    fields: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1", "e2", "e3", "", "x" * 128, "x" * 129])),
        "type": "activity" if kind < 7 else draw(st.sampled_from(
            ["signup", "cancellation", "visit", "Activity"])),
        "user_id": draw(st.sampled_from([user, user, user, "", "u" * 256, "u" * 257])),
        "ts": draw(_ts()),
    }
    if fields["type"] == "visit":
        fields["campaign"] = "spring"
    props = draw(st.integers(0, 3))
    if props == 1:
        fields["props"] = {"platform": "ios"}
    elif props == 2:
        fields["props"] = None
    keys = draw(st.permutations(list(fields)))
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    body = json.dumps({k: fields[k] for k in keys}, separators=sep, ensure_ascii=False)
    return body.encode()


@st.composite
def _batches(draw: st.DrawFn) -> tuple[Prepared, dict[tuple[str, int], int], dict[str, int]]:
    values: list[bytes | None] = []
    offsets: list[int] = []
    runs = []
    applied: dict[tuple[str, int], int] = {}
    for p in range(draw(st.integers(1, 3))):
        src = f"t/{p}"
        first = draw(st.integers(0, 5))
        n = draw(st.integers(0, 30))
        runs.append((src, len(values), len(values) + n))
        values += [draw(_value()) for _ in range(n)]
        offsets += list(range(first, first + n))
        if draw(st.booleans()):
            applied[(src, 0)] = first + draw(st.integers(-1, 5))
    today = NOW_MS // 86_400_000
    seen = {u: today - draw(st.integers(0, 2)) for u in USERS[:4] if draw(st.booleans())}
    return Prepared(values, offsets, runs, NOW_MS, LATENESS_MS), applied, seen


def _normal(w: BatchWrites) -> dict[str, Any]:
    return {
        "hll": w.hll,
        "totals": {s: p.totals for s, p in w.shards.items()},
        "activity": {s: {d: Counter(u) for d, u in p.activity.items()}
                     for s, p in w.shards.items()},
        "customer": {s: p.customer for s, p in w.shards.items()},
        "counters": {s: p.counters for s, p in w.shards.items()},
        "new_days": w.new_days,
        "dead": [(m.src, m.offset, m.item) for m in w.dead],
        "last_offset": w.last_offset,
        "folded": w.folded,
    }


@needs_extension
@settings(max_examples=300, deadline=None)
@given(_batches(), st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]),
       st.sampled_from([1, 3]), st.sampled_from([90, 32]))
def test_compiled_fold_equals_python_fold(
        batch: tuple[Prepared, dict[tuple[str, int], int], dict[str, int]], zone: str,
        shards: int, retention: int) -> None:
    prepared, applied, seen = batch
    keys = KeySpace(shards=shards, buckets=16, retention_days=retention)
    today = DayMapper(zone).today(NOW)
    fast = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, applied, seen))
    slow = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, applied, seen),
                         compiled=False)
    assert _normal(fast) == _normal(slow)
    # `seen` as the worker holds it with the compiled parts: the compact table
    table = _compiled.fastfold.UserMap()
    table.update(seen)
    on_table = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, applied,
                                                   table))
    assert _normal(on_table) == _normal(slow)


@needs_extension
def test_the_shortcut_takes_the_common_shapes() -> None:
    """Guards the test above against a shortcut that takes nothing (equal, but useless)."""
    ts = NOW_MS - 3_600_000
    plain = [
        {"event_id": "a1", "type": "activity", "user_id": "u1", "ts": ts},
        {"event_id": "a2", "type": "activity", "user_id": "u2", "ts": _rfc3339(ts, 0, 3),
         "props": {"platform": "web"}},
        {"user_id": "u3", "ts": _rfc3339(ts, 1, 0), "type": "activity", "event_id": "a3"},
    ]
    values: list[bytes | None] = [json.dumps(e).encode() for e in plain]
    values.append(b'{"event_id":"s1","type":"signup","user_id":"u1","ts":%d}' % ts)
    prepared = Prepared(values, [0, 1, 2, 3], [("t/0", 0, 4)], NOW_MS, LATENESS_MS)
    keys = KeySpace(shards=1, buckets=16)
    days = DayMapper("UTC")
    ctx = (NOW_MS, LATENESS_MS, 1, True, {}, days.day_of_ms, 0, 0, {}, {}, [{}], {})
    assert fold_module._fastfold is not None
    taken, left, late = fold_module._fastfold.fold_activity(values, prepared.offsets, 0, 4,
                                                            -1, ctx)
    assert taken == [3] and left == [3] and late == [[0, 0, 0, 0]]
    w = fold_prepared(prepared, FoldContext(keys, days, days.today(NOW), {}))
    assert w.shards[0].totals == {"e:activity": 3, "e:signup": 1}
    assert w.hll == {(ts // 86_400_000): {"u1", "u2", "u3"}}


@needs_extension
@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_the_shortcut_counts_late_activity_by_age(zone: str) -> None:
    """Guards the equality above for the late-events counter: the compiled fold itself
    counts late plain activity events (none goes to the Python path), by the local days
    between the event's day and today, bucket edges included."""
    tz = ZoneInfo(zone)
    # an hour before the clock, in local wall time: the same hour of each earlier day
    base = NOW.astimezone(tz) - timedelta(hours=1)
    ages = [0, 1, 1, 2, 7, 8, 30, 31, 45, 399]
    values: list[bytes | None] = [
        json.dumps({"event_id": f"a{i}", "type": "activity", "user_id": f"u{i}",
                    "ts": int((base - timedelta(days=age)).timestamp() * 1000)}).encode()
        for i, age in enumerate(ages)]
    prepared = Prepared(values, list(range(len(values))), [("t/0", 0, len(values))],
                        NOW_MS, LATENESS_MS)
    days = DayMapper(zone)
    today = days.today(NOW)
    keys = KeySpace(shards=1, buckets=16)
    w = fold_prepared(prepared, FoldContext(keys, days, today, {}))
    assert w.shards[0].totals == {"e:activity": 10, "late:1d": 2, "late:2-7d": 2,
                                  "late:8-30d": 2, "late:31d+": 3}
    ctx = (NOW_MS, LATENESS_MS, 1, zone == "UTC", {} if zone == "UTC" else days.slot_cache,
           days.day_of_ms, 0, 0, {}, {}, [{}], {}, today)
    assert fold_module._fastfold is not None
    taken, left, late = fold_module._fastfold.fold_activity(
        values, prepared.offsets, 0, len(values), -1, ctx)
    assert taken == [10] and left == [] and late == [[2, 2, 2, 3]]


# -- the `segment` preset's shape (fold_activity shape 1) ---------------------------------
_SEGMENT_EVENTS = ["Video Played", "Signed Up", "Subscription Cancelled", "Order Completed",
                   "Survey Responded", "Signed\\u0020Up", "signed up", ""]


@st.composite
def _segment_value(draw: st.DrawFn) -> bytes:
    """A Segment call in the variants the compiled shape takes or must hand back."""
    kind = draw(st.integers(0, 12))
    if kind == 0:
        return draw(st.sampled_from([b"", b"{", b"[]", b"null", b'{"type":"track"}',
                                     b'{"type":"track",}', b"\xff", b'{"a":1e999}']))
    user = draw(st.sampled_from(USERS))
    fields: dict[str, Any] = {
        "type": draw(st.sampled_from(["track"] * 4 + ["screen", "page", "identify",
                                                       "Track", 1, None])),
        "messageId": draw(st.sampled_from(["m1", "m2", "m3"] * 3 + ["", None, 5, "x" * 128,
                                                                   "x" * 129])),
        "timestamp": draw(_ts()),
    }
    if draw(st.integers(0, 3)):
        fields["event"] = draw(st.sampled_from([*_SEGMENT_EVENTS, 3, None, ["x"]]))
    ids = draw(st.sampled_from([1, 1, 1, 0, 2, 3, 4, 5]))
    if ids in (0, 1, 2):
        fields["userId"] = user if ids else draw(st.sampled_from(["", None, 7, "u" * 257]))
    if ids in (0, 2, 3, 4):
        fields["anonymousId"] = draw(st.sampled_from([user, "anon-1", "", None, 7]))
    extra = draw(st.integers(0, 4))
    if extra >= 1:
        fields["context"] = draw(st.sampled_from([
            {"library": {"name": "analytics.js"}, "campaign": {"name": "spring"}},
            {"page": {"path": "/a\"b", "n": [1, 2.5, -3e-2, True, False, None]}},
            {"deep": [[[[{"x": "ü"}]]]]}, "text", None, [1, {"a": {}}],
            {"esc": "tab\t\u00e9 \U0001f600"}]))
    if extra >= 2:
        fields["properties"] = {"survey": "nps", "score": draw(st.sampled_from([9, "9"]))}
    if extra >= 3:
        fields["sentAt"] = "2026-11-22T10:00:00.000Z"
        fields["integrations"] = {}
    keys = draw(st.permutations(list(fields)))
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    body = json.dumps({k: fields[k] for k in keys}, separators=sep,
                      ensure_ascii=draw(st.booleans()))
    # Escaped keys, a key given twice, and trailing bytes must be handed back too.
    trick = draw(st.integers(0, 12))
    if trick == 1:
        body = body.replace('"type"', '"typ\\u0065"', 1)
    elif trick == 2:
        body = body[:-1] + ', "type": "identify"}'
    elif trick == 3:
        body = body[:-1] + ', "userId": "later"}'
    elif trick == 4:
        body += " x"
    elif trick == 5:
        body = body.replace('\\\\u', '\\u', 1)
    return body.encode()


@needs_extension
@settings(max_examples=400, deadline=None)
@given(st.lists(_segment_value(), max_size=40), st.sampled_from(["UTC", "Asia/Kolkata"]),
       st.sampled_from([1, 3]))
def test_compiled_segment_shape_equals_the_mapping(values: list[bytes], zone: str,
                                                   shards: int) -> None:
    from stream import formats

    segment = formats.load("segment")
    assert segment is not None and segment.compiled_shape == 1
    vals: list[bytes | None] = list(values)
    prepared = Prepared(vals, list(range(len(vals))), [("s/0", 0, len(vals))], NOW_MS,
                        LATENESS_MS, {"s": segment})
    keys = KeySpace(shards=shards, buckets=16)
    today = DayMapper(zone).today(NOW)
    fast = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, {}, {}))
    slow = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, {}, {}),
                         compiled=False)
    assert _normal(fast) == _normal(slow)


@needs_extension
def test_the_segment_shape_takes_track_and_screen_calls() -> None:
    ts = NOW_MS - 3_600_000
    calls = [
        {"type": "track", "event": "Video Played", "messageId": "m1", "userId": "u1",
         "timestamp": _rfc3339(ts, 0, 3), "context": {"library": {"name": "a"}},
         "properties": {"n": [1, 2.5]}},
        {"type": "screen", "messageId": "m2", "userId": "", "anonymousId": "a2",
         "timestamp": ts},
        {"type": "track", "event": "Signed Up", "messageId": "m3", "userId": "u3",
         "timestamp": ts},
        {"type": "page", "messageId": "m4", "userId": "u4", "timestamp": ts},
    ]
    values: list[bytes | None] = [json.dumps(c).encode() for c in calls]
    days = DayMapper("UTC")
    ctx = (NOW_MS, LATENESS_MS, 1, True, {}, days.day_of_ms, 0, 0, {}, {}, [{}], {})
    assert fold_module._fastfold is not None
    taken, left, _late = fold_module._fastfold.fold_activity(values, [0, 1, 2, 3], 0, 4, -1,
                                                             ctx, 1)
    assert taken == [2] and left == [2, 3]
    # a user's own copy of the preset is not the compiled shape: same writes, Python path
    from stream import formats

    copy = formats.load(str(formats.preset_path("segment")))
    assert copy is not None and copy.compiled_shape == 0

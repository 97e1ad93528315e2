"""The decode stage (stream/decode.py): a consumed batch -> `Message`s, before the fold.

Expected items come from `events.decode`, the one-message definition, and from the
values themselves (their source and offset), never from `decode` itself."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from stream import formats
from stream.decode import Message, Prepared, decode
from stream.events import UNREADABLE_BATCH, DeadLetter, Event, Ignored, Unreadable
from stream.events import decode as decode_one

NOW_MS = 1_795_334_400_000  # 2026-11-22T08:00:00Z
LATENESS_MS = 400 * 86_400_000
TS_MS = NOW_MS - 3_600_000


def native(i: int, kind: str = "activity") -> bytes:
    body = {"event_id": f"e{i}", "type": kind, "user_id": f"u{i % 3}", "ts": TS_MS}
    if kind == "visit":
        body["campaign"] = "spring"
    return json.dumps(body).encode()


VALUES: list[bytes | None] = [
    native(0), native(1, "signup"), b"not json", None, native(4, "visit"),
    native(5), b'{"type":"activity"}', native(7, "cancellation"),
]
#: two partitions of one topic and one of another: (src, start, stop)
RUNS = [("a/0", 0, 3), ("a/1", 3, 5), ("b/0", 5, 8)]
OFFSETS = [10, 11, 12, 40, 41, 7, 8, 9]
SRC_OF = ["a/0"] * 3 + ["a/1"] * 2 + ["b/0"] * 3


def batch(values: list[bytes | None] = VALUES) -> Prepared:
    return Prepared(values, OFFSETS, RUNS, NOW_MS, LATENESS_MS)


def test_every_message_in_batch_order_with_its_source_and_offset() -> None:
    got = decode(batch())
    assert got == [Message(SRC_OF[i], OFFSETS[i], decode_one(v, NOW_MS, LATENESS_MS), v)
                   for i, v in enumerate(VALUES)]
    assert isinstance(got[0].item, Event) and got[0].item.type_code == 0
    assert isinstance(got[2].item, DeadLetter) and got[2].item.reason == "invalid_json"


@given(st.lists(st.integers(0, len(VALUES) - 1), max_size=20))
def test_some_indices_in_the_order_given(indices: list[int]) -> None:
    got = decode(batch(), indices)
    assert [(m.src, m.offset, m.value) for m in got] == [
        (SRC_OF[i], OFFSETS[i], VALUES[i]) for i in indices]
    assert [m.item for m in got] == [decode_one(VALUES[i], NOW_MS, LATENESS_MS)
                                     for i in indices]


def test_an_unreadable_record_batch_becomes_its_dead_letter() -> None:
    values = list(VALUES)
    values[3] = Unreadable(b"\x00\x00batch", "CRC mismatch", 38, 40)
    got = decode(batch(values))
    assert got[3].item == DeadLetter(UNREADABLE_BATCH, "CRC mismatch")
    assert got[3].value is values[3]
    others = [m.item for i, m in enumerate(got) if i != 3]
    assert others == [decode_one(v, NOW_MS, LATENESS_MS) for i, v in enumerate(values)
                      if i != 3]


def test_a_mapped_topic_is_decoded_by_its_format_and_the_others_natively() -> None:
    segment = formats.load("segment")
    assert segment is not None
    track = json.dumps({"type": "track", "event": "Played", "messageId": "s1",
                        "userId": "u9", "timestamp": "2026-11-22T07:00:00Z"}).encode()
    values: list[bytes | None] = [native(0), track, native(2), track, native(4), native(5),
                                  track, native(7)]
    prepared = Prepared(values, OFFSETS, RUNS, NOW_MS, LATENESS_MS, {"b": segment})
    # indices crossing the runs, out of order
    got = decode(prepared, [6, 0, 1, 5, 3])
    assert got[0].item == Event("s1", 0, "u9", TS_MS)  # topic b: the Segment mapping
    assert got[1].item == decode_one(values[0], NOW_MS, LATENESS_MS)
    # topic a is native: a Segment call there is not an event
    assert isinstance(got[2].item, DeadLetter) and got[2].item.reason == "invalid_event"
    assert got[3].item == Ignored("unmapped")  # a native event on the mapped topic
    assert isinstance(got[4].item, DeadLetter)
    assert [(m.src, m.offset) for m in got] == [("b/0", 8), ("a/0", 10), ("a/0", 11),
                                                ("b/0", 7), ("a/1", 40)]

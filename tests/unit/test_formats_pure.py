"""Mapping files (contract section 5) without servers: the loader's checks, every precise
rule of the matcher, the `segment` preset rule by rule, the fast path against the
definition, the fold of ignored messages, and the settings that select formats.

Expected outcomes are written out by hand from the contract's text, never computed by
the code under test."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import formats
from stream.decode import Message, Prepared, decode
from stream.events import DeadLetter, Event, Ignored
from stream.fold import FoldContext, fold
from stream.formats import FormatError, Mapper, parse
from stream.keys import KeySpace
from stream.settings import SettingsError, load
from stream.stages import fold_prepared
from stream.store.wire import ShardPlan
from stream.timebuckets import DayMapper

NOW_MS = 1_795_334_400_000  # 2026-11-22T08:00:00Z
LATENESS_MS = 400 * 86_400_000
TS = "2026-11-22T07:00:00Z"
TS_MS = NOW_MS - 3_600_000


def mapper(text: str) -> Mapper:
    return Mapper(parse(textwrap.dedent(text), "test.yaml"))


def one(m: Mapper, msg: Any) -> Event | DeadLetter | Ignored:
    value = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    slow = m.explain(value, NOW_MS, LATENESS_MS).item
    fast = m.decode_batch([value], NOW_MS, LATENESS_MS)[0]
    assert fast == slow, (msg, fast, slow)
    return slow


def problems(text: str) -> list[str]:
    with pytest.raises(FormatError) as err:
        parse(textwrap.dedent(text), "bad.yaml")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("mapping file bad.yaml: ")
    return err.value.problems


BASE = """
fields: {event_id: id, user_id: uid, ts: at}
"""


# -- loader ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "needle"), [
    ("fields: [\n", "bad YAML at line 2"),
    ("- a\n- b\n", "must be a YAML mapping"),
    (BASE + "rules: [{type: activity}]\nextra: 1\n", "unknown key `extra`"),
    (BASE + "rules: [{type: activity, when: {a: 1}}]\n", "rule 1: unknown key `when`"),
    (BASE + "rules: [{type: purchase}]\n", "rule 1: `type` is 'purchase'"),
    (BASE + "rules: [{match: {a: 1}}]\n", "rule 1: `type` is missing"),
    (BASE + "rules: [{type: visit}]\n", "rule 1: a visit event needs `campaign`"),
    (BASE + "rules: [{type: survey, fields: {survey: s}}]\n", "needs `score`"),
    ("fields: {event_id: id, ts: at}\nrules: [{type: signup}]\n", "needs `user_id`"),
    ("rules: [{type: signup}]\n", "`fields` is missing"),
    (BASE + "rules: []\n", "`rules` must be a non-empty list"),
    (BASE + "rules: [{type: activity}]\notherwise: drop\n", "`otherwise` is 'drop'"),
    (BASE + "rules: [{type: activity, match: {a..b: 1}}]\n", "has an empty key"),
    (BASE + "rules: [{type: activity, match: {d: 2026-01-01}}]\n", "the date 2026-01-01"),
    (BASE + "rules: [{type: activity, match: {a: {present: yes_please}}}]\n",
     "{present: true} or {present: false}"),
    (BASE + "rules: [{type: activity, match: {a: []}}]\n", "an empty list matches nothing"),
    ("fields: {event_id: id, user_id: uid, ts: at, type: t}\nrules: [{type: activity}]\n",
     "`type` comes from the rules"),
    ("fields: {event_id: id, user_id: uid, ts: at, colour: c}\nrules: [{type: activity}]\n",
     "unknown field `colour`"),
    (BASE + "rules: [{type: survey, set: {survey: stars, score: 5}}]\n",
     "`set` of `survey` must be nps or csat"),
])
def test_bad_mapping_files_are_refused_with_one_line(text: str, needle: str) -> None:
    found = problems(text)
    assert any(needle in p for p in found), found


def test_every_problem_is_listed() -> None:
    found = problems(BASE + "rules: [{type: nope}, {type: visit}]\nfoo: 1\n")
    assert len(found) == 3
    with pytest.raises(FormatError) as err:
        parse(BASE + "rules: [{type: nope}, {type: visit}]\nfoo: 1\n", "bad.yaml")
    assert "(and 2 more" in str(err.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such file"):
        formats.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"fields: {event_id: \xe9}\n")
    with pytest.raises(FormatError, match="cannot read it"):
        formats.load(str(bad))


def test_format_names() -> None:
    assert formats.load("native") is None
    seg = formats.load("segment")
    assert seg is not None and seg.name == "segment"
    # anything else is a path, even a preset's name
    with pytest.raises(FormatError, match="no such file"):
        formats.load("posthog")
    assert formats.load(str(formats.preset_path("posthog"))) is not None
    assert set(formats.presets()) == {"segment", "rudderstack", "posthog", "snowplow",
                                      "cloudevents"}
    with pytest.raises(FormatError, match="an empty format"):
        formats.load("")


def test_settings_refuse_a_bad_mapping_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text(BASE + "rules: [{type: visit}]\n")
    with pytest.raises(SettingsError) as err:
        load({"event_format": str(bad)})
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("bad setting --event-format: mapping file ")
    assert str(bad) in text and "needs `campaign`" in text
    with pytest.raises(SettingsError, match=r"STREAM_TOPIC_FORMATS|--topic-formats"):
        load({"topic_formats": "a=segment,b"})
    with pytest.raises(SettingsError, match="given twice"):
        load({"topic_formats": "a=segment,a=native"})


def test_topic_formats_override_the_default() -> None:
    s = load({"event_format": "segment", "topic_formats": "old=native, web = segment"})
    assert s.format_of("old") is None
    assert s.format_of("web") is formats.load("segment")
    assert s.format_of("anything") is formats.load("segment")
    assert load({}).format_of("x") is None


# -- the segment preset, rule by rule -------------------------------------------------
def seg(**kw: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"messageId": "m1", "userId": "u1", "timestamp": TS}
    msg.update(kw)
    return {k: v for k, v in msg.items() if v is not ...}


SEGMENT = formats.load("segment")
assert SEGMENT is not None
CAMPAIGN = {"campaign": {"name": "spring", "source": "mail"}}


@pytest.mark.parametrize(("msg", "want"), [
    (seg(type="track", event="Signed Up"), Event("m1", 1, "u1", TS_MS)),
    (seg(type="track", event="Subscription Cancelled"), Event("m1", 4, "u1", TS_MS)),
    (seg(type="track", event="Order Completed", context=CAMPAIGN),
     Event("m1", 3, "u1", TS_MS, campaign="spring")),
    # without a campaign an order is plain activity (rule 6)
    (seg(type="track", event="Order Completed"), Event("m1", 0, "u1", TS_MS)),
    (seg(type="track", event="Order Completed", context={"campaign": {"name": ""}}),
     Event("m1", 0, "u1", TS_MS)),
    (seg(type="track", event="Survey Responded", properties={"survey": "nps", "score": 9}),
     Event("m1", 5, "u1", TS_MS, survey="nps", score=9)),
    (seg(type="page", context=CAMPAIGN), Event("m1", 2, "u1", TS_MS, campaign="spring")),
    (seg(type="page"), Event("m1", 0, "u1", TS_MS)),
    (seg(type="screen", context=CAMPAIGN), Event("m1", 0, "u1", TS_MS)),
    (seg(type="track", event="Video Played"), Event("m1", 0, "u1", TS_MS)),
    # names are case-sensitive: not a signup, but still a track call
    (seg(type="track", event="signed up"), Event("m1", 0, "u1", TS_MS)),
    (seg(type="identify", traits={"plan": "pro"}), Ignored("unmapped")),
    (seg(type="group", groupId="g"), Ignored("unmapped")),
    (seg(type="alias", previousId="p"), Ignored("unmapped")),
    (seg(type="Track"), Ignored("unmapped")),
    (seg(), Ignored("unmapped")),
    # user: userId, else anonymousId (an empty or null userId is not present)
    (seg(type="page", userId=..., anonymousId="a1"), Event("m1", 0, "a1", TS_MS)),
    (seg(type="page", userId="", anonymousId="a1"), Event("m1", 0, "a1", TS_MS)),
    (seg(type="page", userId=None, anonymousId="a1"), Event("m1", 0, "a1", TS_MS)),
    (seg(type="page", anonymousId="a1"), Event("m1", 0, "u1", TS_MS)),
    (seg(type="page", timestamp=TS_MS), Event("m1", 0, "u1", TS_MS)),
])
def test_segment_preset(msg: dict[str, Any], want: Any) -> None:
    assert one(SEGMENT, msg) == want


@pytest.mark.parametrize(("msg", "reason", "needles"), [
    # a present value of the wrong JSON type is used, never skipped for the next path
    (seg(type="page", userId=7, anonymousId="a1"), "invalid_event", ["user_id", "`userId`"]),
    (seg(type="page", userId=..., anonymousId=...), "invalid_event",
     ["user_id", "`userId`, `anonymousId`"]),
    (seg(type="page", userId="", anonymousId=""), "invalid_event", ["user_id"]),
    (seg(type="page", messageId=...), "invalid_event", ["event_id", "`messageId`"]),
    (seg(type="page", messageId="x" * 129), "invalid_event", ["event_id"]),
    (seg(type="page", timestamp="2026-11-22 07:00:00"), "invalid_event", ["ts", "`timestamp`"]),
    (seg(type="page", timestamp=1.5e12), "invalid_event", ["ts"]),
    # the first rule that holds decides, even when its event is invalid (no fall-through
    # to rule 6's activity)
    (seg(type="track", event="Survey Responded", properties={"survey": "nps", "score": "9"}),
     "invalid_event", ["score", "`properties.score`", "rule 4"]),
    (seg(type="track", event="Survey Responded", properties={"survey": "nps", "score": 11}),
     "invalid_event", ["score"]),
    (seg(type="track", event="Survey Responded", properties={"survey": "NPS", "score": 9}),
     "invalid_event", ["survey"]),
    (seg(type="track", event="Survey Responded"), "invalid_event", ["survey"]),
    (seg(type="track", event="Order Completed", context={"campaign": {"name": 5}}),
     "invalid_event", ["campaign", "`context.campaign.name`"]),
    # the time window keeps its reasons
    (seg(type="page", timestamp="2024-01-01T00:00:00Z"), "late", []),
    (seg(type="page", timestamp="2026-11-22T09:00:00Z"), "future", []),
    (seg(type="identify", timestamp="2024-01-01T00:00:00Z"), None, []),
])
def test_segment_invalid_values(msg: dict[str, Any], reason: str | None,
                                needles: list[str]) -> None:
    got = one(SEGMENT, msg)
    if reason is None:
        assert got == Ignored("unmapped")
        return
    assert isinstance(got, DeadLetter) and got.reason == reason, got
    for needle in needles:
        assert needle in got.detail, got.detail


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "invalid_json"), (None, "invalid_json"), (b"{", "invalid_json"),
    (b'{"a": NaN}', "invalid_json"), (b'{"userId": "\xff"}', "invalid_json"),
    (b"[1, 2]", "invalid_event"), (b'"track"', "invalid_event"), (b"null", "invalid_event"),
])
def test_not_an_object(value: bytes | None, reason: str) -> None:
    slow = SEGMENT.explain(value, NOW_MS, LATENESS_MS).item
    fast = SEGMENT.decode_batch([value], NOW_MS, LATENESS_MS)[0]
    assert fast == slow
    assert isinstance(slow, DeadLetter) and slow.reason == reason


# -- precise rules --------------------------------------------------------------------
def test_rule_order_first_match_wins() -> None:
    m = mapper(BASE + textwrap.dedent("""
    rules:
      - {match: {kind: a}, type: signup}
      - {match: {kind: [a, b]}, type: cancellation}
      - {type: activity}
    """))
    base = {"id": "e", "uid": "u", "at": TS}
    assert one(m, {**base, "kind": "a"}) == Event("e", 1, "u", TS_MS)
    assert one(m, {**base, "kind": "b"}) == Event("e", 4, "u", TS_MS)
    # a missing `match` always holds
    assert one(m, {**base, "kind": "c"}) == Event("e", 0, "u", TS_MS)
    assert one(m, base) == Event("e", 0, "u", TS_MS)


@pytest.mark.parametrize(("want", "value", "holds"), [
    ("1", 1, False), (1, "1", False), (1, True, False), (True, 1, False), (0, False, False),
    (1, 1, True), (1, 1.0, True), (1.5, 1.5, True), (True, True, True), (False, False, True),
    ("Track", "track", False), ("track", "track", True), (None, None, True),
    ("x", None, False), (None, "", False),
])
def test_matching_keeps_json_types_apart(want: Any, value: Any, holds: bool) -> None:
    literal = json.dumps(want)
    m = mapper(BASE + f"rules: [{{match: {{k: {literal}}}, type: activity}}]\n")
    got = one(m, {"id": "e", "uid": "u", "at": TS, "k": value})
    assert (got == Event("e", 0, "u", TS_MS)) is holds, got


def test_missing_path_matches_no_scalar_not_even_null() -> None:
    m = mapper(BASE + "rules: [{match: {k: null}, type: activity}]\n")
    assert one(m, {"id": "e", "uid": "u", "at": TS}) == Ignored("unmapped")
    assert one(m, {"id": "e", "uid": "u", "at": TS, "k": {"a": 1}}) == Ignored("unmapped")


def test_presence() -> None:
    m = mapper(BASE + textwrap.dedent("""
    rules:
      - {match: {a.b: {present: true}}, type: signup}
      - {match: {a.b: {present: false}}, type: cancellation}
    """))
    base = {"id": "e", "uid": "u", "at": TS}
    for present in ({"b": "x"}, {"b": 0}, {"b": False}, {"b": []}, {"b": {}}, {"b": " "}):
        assert one(m, {**base, "a": present}).type_code == 1, present  # type: ignore[union-attr]
    for absent in ({"b": None}, {"b": ""}, {}, None, "text", [1], 3):
        assert one(m, {**base, "a": absent}).type_code == 4, absent  # type: ignore[union-attr]
    assert one(m, base).type_code == 4  # type: ignore[union-attr]


def test_rule_fields_replace_the_top_level_ones() -> None:
    m = mapper("""
    fields: {event_id: id, user_id: uid, ts: at, campaign: c}
    rules:
      - {match: {kind: v}, type: visit, fields: {campaign: utm}}
      - {match: {kind: c}, type: conversion}
      - {match: {kind: s}, type: signup, fields: {user_id: [account, uid]}}
    """)
    base = {"id": "e", "uid": "u", "at": TS, "c": "top"}
    assert one(m, {**base, "kind": "v", "utm": "own"}) == Event("e", 2, "u", TS_MS,
                                                                 campaign="own")
    # no fallback to the top-level path when the rule's own is absent
    got = one(m, {**base, "kind": "v"})
    assert isinstance(got, DeadLetter) and got.reason == "invalid_event"
    assert "campaign" in got.detail and "`utm`" in got.detail
    assert one(m, {**base, "kind": "c"}) == Event("e", 3, "u", TS_MS, campaign="top")
    assert one(m, {**base, "kind": "s", "account": "acc"}) == Event("e", 1, "acc", TS_MS)
    assert one(m, {**base, "kind": "s"}) == Event("e", 1, "u", TS_MS)


def test_otherwise() -> None:
    text = BASE + "rules: [{match: {k: 1}, type: activity}]\n"
    assert one(mapper(text), {"k": 2}) == Ignored("unmapped")
    assert one(mapper(text + "otherwise: ignore\n"), {"k": 2}) == Ignored("unmapped")
    got = one(mapper(text + "otherwise: dead_letter\n"), {"k": 2})
    assert isinstance(got, DeadLetter) and got.reason == "unmapped"
    # a message that is not a JSON object is dead-lettered as in section 1 either way
    got = one(mapper(text), [1])
    assert isinstance(got, DeadLetter) and got.reason == "invalid_event"


def test_props_and_constants() -> None:
    m = mapper("""
    fields: {event_id: id, user_id: uid, ts: at}
    props: {plan: [p.plan, plan], n: p.n, os: p.os}
    rules:
      - {match: {k: nps}, type: survey, fields: {score: answer}, set: {survey: nps}}
      - {type: activity}
    """)
    base = {"id": "e", "uid": "u", "at": TS}
    # only string values are kept; the first present path wins (a number there drops it)
    got = one(m, {**base, "p": {"plan": "pro", "n": 3, "os": ""}, "plan": "free"})
    assert got == Event("e", 0, "u", TS_MS, props={"plan": "pro"})
    assert one(m, {**base, "plan": "free"}) == Event("e", 0, "u", TS_MS, props={"plan": "free"})
    assert one(m, {**base, "p": {"plan": 1}, "plan": "free"}) == Event("e", 0, "u", TS_MS)
    assert one(m, {**base, "k": "nps", "answer": 10}) == Event("e", 5, "u", TS_MS,
                                                               survey="nps", score=10)


def test_paths_through_non_objects() -> None:
    # `a.b` is both a value and an object on the way to `a.b.c`: no typed decoder, the
    # definition decides everything
    m = mapper("""
    fields: {event_id: id, user_id: [a.b.c, a.b, uid], ts: at}
    rules: [{type: activity}]
    """)
    base = {"id": "e", "uid": "u", "at": TS}
    assert one(m, {**base, "a": {"b": {"c": "deep"}}}) == Event("e", 0, "deep", TS_MS)
    assert one(m, {**base, "a": {"b": "mid"}}) == Event("e", 0, "mid", TS_MS)
    got = one(m, {**base, "a": {"b": {"d": 1}}})  # `a.b` is present: an object, invalid
    assert isinstance(got, DeadLetter) and got.reason == "invalid_event"
    # a typed decoder that meets a string or array where it expects an object hands the
    # message to the definition: the path is simply missing
    m = mapper("""
    fields: {event_id: id, user_id: [a.b.c, uid], ts: at}
    rules: [{type: activity}]
    """)
    for a in ("top", [1], {"b": "mid"}, {"b": [{"c": "x"}]}, None, {"b": None}):
        assert one(m, {**base, "a": a}) == Event("e", 0, "u", TS_MS), a


# -- the fast path equals the definition ----------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2),
                     st.sampled_from(["", "track", "page", "screen", "identify", "Signed Up",
                                      "Order Completed", "Survey Responded", "nps", "csat",
                                      "spring", "u1", "a1", TS, "2026-11-22T07:00:00+01:00",
                                      "1"]),
                     st.integers(TS_MS - 10**10, TS_MS + 10**9))
_json = st.recursive(_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=3),
    st.dictionaries(st.sampled_from(["name", "campaign", "score", "survey", "x"]), kids,
                    max_size=3)), max_leaves=8)
_keys = ["type", "event", "messageId", "userId", "anonymousId", "timestamp", "context",
         "properties", "uuid", "distinct_id", "event_id", "user_id", "derived_tstamp",
         "collector_tstamp", "mkt_campaign", "id", "time", "subject", "data", "specversion"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_keys), _json, max_size=8), min_size=1,
                max_size=12),
       st.sampled_from(sorted(formats.presets())))
def test_fast_path_equals_definition(messages: list[dict[str, Any]], preset: str) -> None:
    m = formats.load(str(formats.preset_path(preset)))
    assert m is not None
    values: list[bytes | None] = [msgspec.json.encode(x) for x in messages]
    values += [b"", None, b"[", b'{"type":"track","type":"page"}']
    want = [m.explain(v, NOW_MS, LATENESS_MS).item for v in values]
    assert m.decode_batch(values, NOW_MS, LATENESS_MS) == want


# -- the fold -------------------------------------------------------------------------
KEYS = KeySpace(prefix="t", shards=2, buckets=4, max_lateness_days=400, retention_days=90)
DAYS = DayMapper("UTC")
TODAY = DAYS.day_of_ms(NOW_MS)


def test_ignored_messages_are_counted_once_in_the_dead_letter_shard() -> None:
    msgs = [Message("t/0", 5, Ignored("unmapped"), b"{}"),
            Message("t/0", 6, Ignored("unmapped"), b"{}"),
            Message("t/0", 7, DeadLetter("unmapped", "no rule"), b"{}")]
    out = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {}))
    assert out.shards == {0: ShardPlan(totals={"ig:unmapped": 2, "dl:unmapped": 1})}
    assert [m.offset for m in out.dead] == [7]
    assert out.last_offset == {"t/0": 7}
    # a redelivery: offsets 5 and 6 are applied in the dead-letter shard already
    again = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {("t/0", 0): 6}))
    assert again.shards == {0: ShardPlan(totals={"dl:unmapped": 1})}


def test_mapped_topics_bypass_the_compiled_fold() -> None:
    native = json.dumps({"event_id": "n1", "type": "activity", "user_id": "u1",
                         "ts": TS}).encode()
    track = json.dumps(seg(type="track", event="Played", messageId="s1", userId="u2")).encode()
    ident = json.dumps(seg(type="identify")).encode()
    # the same bytes on both topics: the native one reads the Segment call as invalid,
    # the mapped one reads the native event as unmapped
    values: list[bytes | None] = [native, track, ident, native, track, ident]
    runs = [("n/0", 0, 3), ("s/0", 3, 6)]
    prepared = Prepared(values, [0, 1, 2, 0, 1, 2], runs, NOW_MS, LATENESS_MS,
                        {"s": SEGMENT})
    items = [m.item for m in decode(prepared)]
    assert items[0] == Event("n1", 0, "u1", TS_MS)
    assert isinstance(items[1], DeadLetter) and items[1].reason == "invalid_event"
    assert isinstance(items[2], DeadLetter) and items[2].reason == "invalid_event"
    assert items[3] == Ignored("unmapped")  # no `type` of a Segment call
    assert items[4] == Event("s1", 0, "u2", TS_MS)
    assert items[5] == Ignored("unmapped")
    for compiled in (True, False):
        w = fold_prepared(prepared, FoldContext(KEYS, DAYS, TODAY, {}, {}), compiled=compiled)
        totals: dict[str, int] = {}
        for plan in w.shards.values():
            for k, v in plan.totals.items():
                totals[k] = totals.get(k, 0) + v
        assert totals == {"e:activity": 2, "dl:invalid_event": 2, "ig:unmapped": 2}
        assert w.hll == {DAYS.day_of_ms(TS_MS): {"u1", "u2"}}
        assert w.last_offset == {"n/0": 2, "s/0": 2}


# -- check-format ---------------------------------------------------------------------
def test_check_command_on_a_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.__main__ import main

    sample = tmp_path / "sample.jsonl"
    now = msgspec.json.encode
    lines = [
        now(seg(type="track", event="Signed Up", timestamp="2026-01-02T00:00:00Z")),
        now(seg(type="identify")),
        now(seg(type="page", userId=7)),
        b"",
        b"not json",
    ]
    sample.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["check-format", "segment", "--sample", str(sample)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(str(formats.preset_path("segment")) + ": OK, 6 rules")
    assert out[1].startswith("1: rule 1 (Signed Up) -> ")
    assert json.loads(out[1].split(" -> ", 1)[1]) == {
        "event_id": "m1", "type": "signup", "user_id": "u1", "ts": 1767312000000}
    assert out[2] == "2: ignored (unmapped): no rule matches (otherwise: ignore)"
    assert out[3].startswith("3: dead letter invalid_event (rule 6 (track, page or screen)): ")
    assert "`userId`" in out[3]
    assert out[4].startswith("4: dead letter invalid_json: ")
    assert out[5] == ("4 messages: dead letter invalid_event 1, dead letter invalid_json 1, "
                      "event signup 1, ignored unmapped 1")
    assert main(["check-format", "segment", "--sample", str(sample), "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["outcome"] for r in recs] == ["event", "ignored", "dead_letter", "dead_letter"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "rules: [{type: visit}, {type: nope}]\n")
    assert main(["check-format", str(bad)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}: rule 2: `type` is 'nope': use one of activity, signup, visit, conversion, "
        "cancellation, survey",
        f"{bad}: rule 1: a visit event needs `campaign`: add it to the rule's `fields` (or "
        "`set`, or the top-level `fields`)",
    ]
    assert main(["check-format", "--presets"]) == 0
    listed = capsys.readouterr().out
    assert "segment: STREAM_EVENT_FORMAT=segment" in listed
    assert f"posthog: STREAM_EVENT_FORMAT={formats.preset_path('posthog')}" in listed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_never_raise(values: list[bytes]) -> None:
    for preset in sorted(formats.presets()):
        m = formats.load(str(formats.preset_path(preset)))
        assert m is not None
        vals: list[bytes | None] = list(values)
        got = m.decode_batch(vals, NOW_MS, LATENESS_MS)
        assert got == [m.explain(v, NOW_MS, LATENESS_MS).item for v in vals]
        assert all(isinstance(x, DeadLetter | Ignored | Event) for x in got)


@pytest.mark.parametrize("value", [
    b"[" * 200_000 + b"]" * 200_000,
    b'{"type":"track","context":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"type":"track","messageId":"\\ud800","userId":"u","timestamp":1}',
    b'{"type":"track","messageId":"' + b"x" * 1_000_000 + b'","userId":"u","timestamp":1}',
    b'{"type":"track","messageId":"m","userId":"u","timestamp":' + b"9" * 5000 + b"}",
    b'{"type":"track","messageId":"m","userId":"u","timestamp":1e999}',
])
def test_hostile_messages_are_dead_lettered(value: bytes) -> None:
    for m in (SEGMENT, formats.load(str(formats.preset_path("cloudevents")))):
        assert m is not None
        fast = m.decode_batch([value], NOW_MS, LATENESS_MS)[0]
        assert fast == m.explain(value, NOW_MS, LATENESS_MS).item
        assert isinstance(fast, DeadLetter | Ignored), fast

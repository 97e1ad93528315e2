"""The wire format between the fold and the Lua scripts (stream/store/wire.py), and the
script registry's assembly (stream/store/scripts.py), without Redis: the field grammar
reads back what it writes, encodings equal hand-written argument lists, replies decode
into their named records."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.keys import SHARD_SUFFIXES, KeySpace
from stream.store import scripts, wire
from stream.store.wire import (
    Applied,
    BatchWrites,
    Claim,
    OffsetMismatch,
    ShardPlan,
    StaleWitness,
)

_decode = msgspec.msgpack.Decoder().decode
_text = st.text(min_size=1, max_size=20)
# Dimension names hold no ':' (segments.parse_dims); kinds neither.
_name = st.text(alphabet=st.characters(blacklist_characters=":"), min_size=1, max_size=12)


# -- grammar ------------------------------------------------------------------------------

def test_fields_as_spelled_in_redis() -> None:
    assert wire.TYPE_FIELDS == ("e:activity", "e:signup", "e:visit", "e:conversion",
                                "e:cancellation", "e:survey")
    assert wire.dead_letter_field("invalid_json") == "dl:invalid_json"
    assert wire.ignored_field("unmapped") == "ig:unmapped"
    assert wire.late_field("2-7d") == "late:2-7d"
    assert wire.FORGOTTEN_FIELD == "fu"
    assert wire.visit_field("spring") == "v:spring"
    assert wire.conversion_field("spring") == "c:spring"
    assert wire.survey_field("nps", 9) == "nps:9"
    assert wire.segment_field("nps9", "plan", "pro") == "s:nps9:plan:pro"
    assert wire.cohort_field("r", 14) == "r:14"
    assert wire.WINDOW_FIELDS == ("nps:0", "nps:1", "nps:2", "nps:3", "nps:4", "nps:5",
                                  "nps:6", "nps:7", "nps:8", "nps:9", "nps:10",
                                  "csat:1", "csat:2", "csat:3", "csat:4", "csat:5")


def test_late_fields_by_age() -> None:
    assert wire.LATE_FIELDS[0] == "late:"  # never used: an event of today is not late
    assert [wire.LATE_FIELDS[a] for a in (1, 2, 7, 8, 30, 31)] == [
        "late:1d", "late:2-7d", "late:2-7d", "late:8-30d", "late:8-30d", "late:31d+"]
    assert len(wire.LATE_FIELDS) == 32
    assert wire.LATE_BUCKET_FIELDS == ("late:1d", "late:2-7d", "late:8-30d", "late:31d+")


def test_survey_tables_hold_every_valid_answer() -> None:
    assert wire.SURVEY_FIELDS[("nps", 0)] == "nps:0"
    assert wire.SURVEY_FIELDS[("csat", 5)] == "csat:5"
    assert ("csat", 0) not in wire.SURVEY_FIELDS
    assert wire.SURVEY_KINDS[("nps", 10)] == "nps10"
    assert len(wire.SURVEY_FIELDS) == len(wire.SURVEY_KINDS) == 16


@given(_text)
def test_counter_fields_read_back(campaign: str) -> None:
    assert wire.parse_counter(wire.visit_field(campaign)) == (wire.VISIT_KIND, campaign)
    assert wire.parse_counter(wire.conversion_field(campaign)) == (
        wire.CONVERSION_KIND, campaign)
    assert wire.is_campaign_field(wire.visit_field(campaign))
    assert wire.is_campaign_field(wire.conversion_field(campaign))


@given(st.sampled_from(sorted(wire.SURVEY_FIELDS)))
def test_survey_fields_read_back(answer: tuple[str, int]) -> None:
    survey, score = answer
    assert wire.parse_counter(wire.survey_field(survey, score)) == (survey, str(score))
    assert not wire.is_campaign_field(wire.survey_field(survey, score))


@given(_name, _name, _text)
def test_segment_fields_read_back(kind: str, dim: str, value: str) -> None:
    assert wire.parse_segment_field(wire.segment_field(kind, dim, value)) == (kind, dim, value)


@given(st.sampled_from(["sD", "sN"]), _name, _text, st.integers(-5, 40_000))
def test_segment_diffs_read_back(kind: str, dim: str, value: str, day: int) -> None:
    # as lua/_churn.lua writes them: 'sD:' .. dim .. ':' .. value .. ':' .. day
    name = f"{kind}:{dim}:{value}:{day}"
    assert wire.parse_segment_diff(name) == (kind, dim, value, day)


@given(st.sampled_from([wire.COHORT_KIND, wire.RETAINED_KIND]), st.integers(1, 30))
def test_cohort_fields_read_back(kind: str, n: int) -> None:
    assert wire.parse_cohort_field(wire.cohort_field(kind, n)) == (kind, n)


def test_late_age_buckets() -> None:
    assert [wire.late_age(a) for a in (-1, 0, 1, 2, 7, 8, 30, 31, 400)] == [
        None, None, "1d", "2-7d", "2-7d", "8-30d", "8-30d", "31d+", "31d+"]


# -- encoding ----------------------------------------------------------------------------

def _claim(n: int, long: bool = False) -> Claim:
    return Claim(f"digest{n}", f"t/0@{n}", 0, long)


def test_apply_arguments_as_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "_redisformats", None)  # number lists, no fragments
    plan = ShardPlan(
        totals={"e:activity": 3, "e:signup": 1},
        activity={20_000: ["u1", "u2"], 19_999: ["u3"]},
        customer=[("u1", 5, 1_700_000_000_000, wire.SIGNUP, 20_000, _claim(7, True))],
        counters=[(20_000, "v:spring", _claim(8))],
    )
    places = {"u2": (0, 6), "u3": (0, 2)}
    args = wire.encode_apply(
        plan, "es:{es0}:", ["t/0", -1, 8], {"il": ["ids:s:2000"], "w": "tok"}, 90, 90,
        {"u1": "4"}, places.__getitem__)
    assert len(args) == 1
    assert _decode(args[0]) == {
        "t": "es:{es0}:",
        "o": ["t/0", -1, 8],
        "e": {"e:activity": 3, "e:signup": 1},
        "b": [20_000, ["4"], 19_999, []],
        "bf": [],
        "bu": [20_000, ["u2"], 19_999, ["u3"]],
        "u": [6, "u2", 2, "u3"],
        "c": ["u1", 5, 1_700_000_000_000, 0, 20_000, "4", "digest7", "t/0@7"],
        "n": [20_000, "v:spring", "digest8", "t/0@8"],
        "r": 90, "bd": 90,
        "il": ["ids:s:2000"], "w": "tok",
    }


def test_apply_arguments_with_a_fragment() -> None:
    if wire._redisformats is None:
        pytest.skip("the compiled Redis formats are not built")
    plan = ShardPlan(activity={20_000: ["u1", "u2"]})
    args = wire.encode_apply(plan, "es:{es0}:", [], {}, 90, 90, {"u1": "3", "u2": "9"},
                             lambda user: (0, 0), top=9)
    # bits 3 and 9, Redis's order (bit 0 the high bit of byte 0): 0x10, 0x40
    assert args[1:] == [b"\x10\x40"]
    body = _decode(args[0])
    assert body["bf"] == [20_000, 0, 2]  # day, first byte, ARGV index
    assert body["b"] == [20_000, []]


def test_apply_arguments_with_segments() -> None:
    from stream.segments import Segments

    seg = Segments(["plan"])
    plan = ShardPlan(
        customer=[("u1", 1, 5, (wire.SIGNUP, "pro"), 20_000, _claim(1, True)),  # type: ignore[list-item]
                  ("u2", 1, 6, wire.CANCELLATION, 20_000, _claim(2, True))],
        counters=[(20_000, ("nps:9", "nps9", "pro"), _claim(3))],  # type: ignore[list-item]
    )
    body = _decode(wire.encode_apply(plan, "t:", [], {}, 90, 90, {}, lambda u: (0, 0),
                                     seg=seg)[0])
    assert body["c"] == ["u1", 1, 5, 0, 20_000, "", "digest1", "t/0@1",
                         "u2", 1, 6, 1, 20_000, "", "digest2", "t/0@2"]
    assert body["cs"] == [{"plan": "pro"}, []]
    assert body["n"] == [20_000, ["nps:9", "s:nps9:plan:pro"], "digest3", "t/0@3"]
    assert body["sd"] == ["plan"]


def test_claim_arguments() -> None:
    ids = wire.IdKeys(["ids:s:9", "ids:l:3"], "ids:s:9", "ids:l:3", 100, 200).as_plan()
    body = _decode(wire.encode_claims("es:{es1}:", [_claim(1), _claim(2, True)], ids))
    assert body == {"t": "es:{es1}:", "c": ["digest1", "t/0@1", 0, "digest2", "t/0@2", 1],
                    "il": ["ids:s:9", "ids:l:3"], "ws": "ids:s:9", "wl": "ids:l:3",
                    "xs": 100, "xl": 200}


def test_forget_arguments() -> None:
    """lua/forget.lua reads `t`, `u` (bucket, user, ...), `d` {first, last} and `s`."""
    body = _decode(wire.encode_forget("es:{es0}:", [3, "u1", 7, "u2"], (19_950, 20_002), True))
    assert body == {"t": "es:{es0}:", "u": [3, "u1", 7, "u2"], "d": [19_950, 20_002], "s": 1}
    body = _decode(wire.encode_forget("es:{es1}:", [], [1, 2], False))
    assert body == {"t": "es:{es1}:", "u": [], "d": [1, 2], "s": 0}


def test_witness_and_id_keys_as_plan() -> None:
    assert wire.Witness("tok", -1, 60).as_plan() == {"w": "tok", "wc": -1, "wt": 60}
    look, ws, wl, xs, xl = KeySpace().id_generations(20_000)
    assert wire.IdKeys(look, ws, wl, xs, xl).as_plan() == {
        "il": look, "ws": ws, "wl": wl, "xs": xs, "xl": xl}


def test_batch_writes_start_empty() -> None:
    w = BatchWrites()
    assert (w.hll, w.shards, w.dead, w.folded, w.base) == ({}, {}, [], 0, {})


# -- replies -------------------------------------------------------------------------------

def test_apply_replies() -> None:
    assert wire.decode_apply([1, 12, 3, [b"u1", b"7", b"u2", b"8"]]) == Applied(
        12, 3, [b"u1", b"7", b"u2", b"8"])
    assert wire.decode_apply([1, 4, -1, []]) == Applied(4, -1, [])
    assert wire.decode_apply([0, b"t/3", 41]) == OffsetMismatch("t/3", 41)
    assert wire.decode_apply([2, 1]) == StaleWitness(True)
    assert wire.decode_apply([2, 0]) == StaleWitness(False)


def test_claim_replies() -> None:
    assert wire.decode_claims([1, 0, 1]) == [True, False, True]


def test_campaign_replies() -> None:
    assert wire.decode_campaigns([2]) == (wire.WINDOWS_MOVING, None, None)
    assert wire.decode_campaigns([0]).status == wire.WINDOWS_PAST
    got = wire.decode_campaigns([1, [10, 4, b"a", 6, 3, b"b", 2, 0], [0, 0]])
    assert got.status == wire.WINDOWS_READY
    assert got.today == wire.TopCampaigns(10, 4, [("a", 6, 3), ("b", 2, 0)])
    assert got.previous == wire.TopCampaigns(0, 0, [])
    into: dict[str, int] = {"v:a": 1}
    assert got.today is not None
    got.today.add_into(into, "other")
    assert into == {"v:a": 7, "c:a": 3, "v:b": 2, "c:b": 0, "v:other": 2, "c:other": 1}


def test_cohort_replies() -> None:
    reply = list(range(16))
    today, previous = wire.decode_cohorts(reply, (1, 7, 14, 30))
    assert today == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert previous == [(8, 9), (10, 11), (12, 13), (14, 15)]
    rows = list(wire.decode_segment_cohorts([7, b"plan", b"pro", 5, 2, 1, b"os", b"ios", 3, 3]))
    assert rows == [wire.SegmentCohort(7, "plan", "pro", 5, 2),
                    wire.SegmentCohort(1, "os", "ios", 3, 3)]


def test_first_week_reply() -> None:
    assert wire.decode_first_week([5, 3, 4, 1]) == wire.FirstWeek(5, 3, 4, 1)


# -- the scripts as Redis receives them ----------------------------------------------------

@pytest.mark.parametrize("name", scripts.NAMES)
def test_scripts_are_assembled(name: str) -> None:
    lua = scripts.source(name)
    assert not re.search(r"^--@include", lua, re.M)
    assert lua.startswith("-- key suffixes")
    assert "local K = {" in lua and "local F = {" in lua
    # no key suffix spelled after a shard's tag: they come from keys.SHARD_SUFFIXES
    assert not re.search(r"tag \.\. '", lua), name
    assert re.fullmatch(r"[0-9a-f]{40}", scripts.sha(name))


def test_claim_logic_is_written_once() -> None:
    for name in ("apply", "claim"):
        assert scripts.source(name).count("local function claim_id(") == 1
    churn = ("local function churn_steps", "local function apply_diff",
             "local function seg_churn_steps")
    for name in ("apply", "forget"):
        assert all(scripts.source(name).count(f) == 1 for f in churn)


def test_prelude_names_every_shard_suffix() -> None:
    lua = scripts.source("apply")
    for name, suffix in SHARD_SUFFIXES.items():
        assert f"{name} = '{suffix}'" in lua
    keys: Any = KeySpace()
    assert keys.counters(0, 5) == keys.tag(0) + "cnt:5"
    assert keys.seq(1) == keys.tag(1) + "seq"


def test_unknown_script() -> None:
    with pytest.raises(KeyError):
        scripts.source("nope")


def test_offset_range_fields() -> None:
    assert wire.SKIPPED_PREFIX + "engagement.activity" == "oor:skipped:engagement.activity"
    assert wire.RESTARTS_PREFIX + "t" == "oor:restarts:t"


def test_churn_diff_fields() -> None:
    # as lua/_churn.lua writes them, with the names of the prelude's `F`
    assert "customers = 'D:', churned = 'N:', seg_customers = 'sD:', seg_churned = 'sN:'" in (
        scripts.source("apply"))
    assert wire.parse_segment_diff("sD:plan:pro:20001") == (
        wire.SEGMENT_CUSTOMERS_DIFF, "plan", "pro", 20_001)
    assert (wire.CUSTOMERS_DIFF, wire.CHURNED_DIFF) == ("D", "N")


def test_scan_fields() -> None:
    assert wire.days_active_field(0, 7, 3) == "0:d7:3"
    assert wire.days_active_field(1, 30, 30) == "1:d30:30"
    assert wire.lifecycle_field(1, "dormant") == "1:lc:dormant"
    assert (wire.SCAN_TODAY, wire.SCAN_AT, wire.SCAN_SECONDS) == ("today", "at", "seconds")


def test_offset_move_and_registry_replies() -> None:
    assert wire.decode_offset_move([1]) == (True, -1)
    assert wire.decode_offset_move([0, b"41"]) == (False, 41)
    assert wire.decode_offset_move([0, None]) == (False, -1)
    assert wire.decode_registry([[b"pro", b"free"], []]) == [["pro", "free"], []]


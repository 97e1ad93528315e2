"""Pure parts of segments and the user scan: the registry cache, the fold's segment
writes, and the figures computed from raw segment and scan numbers."""

from __future__ import annotations

import json

from stream.decode import Message
from stream.events import decode
from stream.figures import RawFigures, SegmentRaw, compute
from stream.fold import FoldContext, fold
from stream.keys import KeySpace
from stream.segments import Segments, parse_dims
from stream.store.scan import PER_DAY, as_fields
from stream.timebuckets import DayMapper

NOW_MS = 1_795_000_000_000
DAYS = DayMapper("UTC")
TODAY = DAYS.day_of_ms(NOW_MS)


def registry(limit: int) -> tuple[list[list[str]], object]:
    stored: dict[str, list[str]] = {}
    calls: list[list[str]] = []

    def register(dims: list[str], max_values: int, flat: list[str]) -> list[list[str]]:
        calls.append(list(flat))
        for j in range(0, len(flat), 2):
            have = stored.setdefault(flat[j], [])
            if flat[j + 1] not in have and len(have) < max_values:
                have.append(flat[j + 1])
        return [list(stored.get(d, [])) for d in dims]

    return calls, register


def test_registry_cache_first_values_win_and_asks_only_for_unknown_values() -> None:
    seg = Segments(("plan",), max_values=2)
    calls, register = registry(2)
    assert seg.lookup(0, None) == "none" and seg.lookup(0, "") == "none"
    assert seg.lookup(0, "x" * 65) == "other"
    assert seg.lookup(0, "pro") is None
    seg.resolve([(0, "pro"), (0, "free"), (0, "team")], register)  # type: ignore[arg-type]
    assert [seg.lookup(0, v) for v in ("pro", "free", "team", "biz")] == [
        "pro", "free", "other", "other"]
    seg.resolve([(0, "biz"), (0, "pro")], register)  # type: ignore[arg-type]
    assert len(calls) == 1  # full: nothing more to ask
    assert seg.values(0) == ["free", "none", "other", "pro"]


def test_parse_dims() -> None:
    assert parse_dims(" plan, country,plan,,") == ("plan", "country")


def _msg(i: int, **ev: object) -> Message:
    raw = json.dumps({"event_id": f"e{i}", "user_id": "u", "ts": NOW_MS, **ev}).encode()
    return Message("t/0", i, decode(raw, NOW_MS, 400 * 86_400_000), raw)


def test_fold_without_segments_writes_nothing_extra() -> None:
    w = fold([_msg(0, type="activity", props={"plan": "pro"})],
             FoldContext(KeySpace(), DAYS, TODAY, {}))
    assert w.shll == {} and w.pending == {}


def test_fold_segment_writes() -> None:
    keys = KeySpace()
    msgs = [_msg(0, type="activity", props={"plan": "pro"}),
            _msg(1, type="visit", campaign="c", props={"os": "ios"}),
            _msg(2, type="signup", props={"plan": "team"}),
            _msg(3, type="cancellation", props={"plan": "gold"})]
    w = fold(msgs, FoldContext(keys, DAYS, TODAY, {}, segments=Segments(("plan", "os"), 5)))
    assert w.shll == {(0, "pro", TODAY): {"u"}, (1, "none", TODAY): {"u"}}
    assert list(w.pending) == [(0, "pro"), (1, "ios"), (0, "team")]  # cancellations: none
    plan = w.shards[0]
    assert plan.counters[0][1] == ("v:c", "v", "none", "ios")
    assert [op[3] for op in plan.customer] == [(0, "team", "none"), 1]


def test_segment_figures() -> None:
    seg = SegmentRaw(
        values={"plan": ["none", "other", "pro"]},
        dau={("plan", "pro"): 2}, wau={("plan", "pro"): 3}, mau={("plan", "pro"): 4},
        diffs={f"sD:plan:pro:{TODAY - 40}": 4, f"sN:plan:pro:{TODAY - 40}": 1,
               f"sD:plan:pro:{TODAY}": 1},
        window_counters={"s:v:plan:pro": 10, "s:c:plan:pro": 2, "s:nps10:plan:pro": 1,
                         "s:nps3:plan:pro": 3, "s:csat5:plan:pro": 1},
    )
    out = compute(RawFigures(today=TODAY, segments=seg))
    assert out["segment_monthly_active_users"]["plan"] == {"none": 0, "other": 0, "pro": 4}
    assert out["segment_stickiness_ratio"]["plan"] == {"pro": 0.5}
    assert out["segment_customers"]["plan"]["pro"] == 5
    assert out["segment_churn_ratio"]["plan"] == {"pro": 0.25}
    assert out["segment_conversion_ratio"]["plan"] == {"pro": 0.2}
    assert out["segment_nps_score"]["plan"] == {"pro": -50.0}
    assert out["segment_csat_ratio"]["plan"] == {"pro": 1.0}


def test_scan_figures_only_for_a_scan_of_today() -> None:
    counts = list(range(2 * PER_DAY))
    scan = {k: str(v) for k, v in as_fields(counts, TODAY, 123.5, 0.1).items()}
    out = compute(RawFigures(today=TODAY, scan=scan))
    assert out["days_active_users"]["7d"]["1"] == 0
    assert out["days_active_users"]["30d"]["30"] == 36
    assert out["lifecycle_users"] == {"new": 37, "returning": 38, "resurrecting": 39,
                                      "dormant": 40}
    assert out["previous_day_lifecycle_users"]["new"] == PER_DAY + 37
    assert out["days_active_computed_timestamp_seconds"] == 123.5
    assert "lifecycle_users" not in compute(RawFigures(today=TODAY + 1, scan=scan))

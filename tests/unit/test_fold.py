"""The pure fold: messages -> grouped writes."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from stream.decode import Message
from stream.events import DeadLetter, Event
from stream.fold import FoldContext, digest, fold
from stream.keys import KeySpace
from stream.timebuckets import DayMapper

DAY = 86_400_000
TODAY = 20_000  # a day number; events below are dated relative to it
KEYS = KeySpace(shards=1, buckets=64)
DAYS = DayMapper("UTC")


def act(user: str, day: int, hour: int = 12) -> Event:
    return Event(f"a-{user}-{day}-{hour}", 0, user, day * DAY + hour * 3_600_000)


def test_activity_grouped_per_day_and_user() -> None:
    msgs = [Message("t/0", i, e) for i, e in enumerate(
        [act("u1", TODAY), act("u1", TODAY, 13), act("u2", TODAY), act("u1", TODAY - 1)])]
    w = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {}))
    assert w.hll == {TODAY: {"u1", "u2"}, TODAY - 1: {"u1"}}
    plan = w.shards[0]
    assert plan.totals == {"e:activity": 4, "late:1d": 1}  # the event of yesterday
    assert plan.activity == {TODAY: ["u1", "u2"], TODAY - 1: ["u1"]}
    assert w.new_days == {"u1": TODAY, "u2": TODAY}
    assert w.last_offset == {"t/0": 3}


def test_redelivered_offsets_are_skipped() -> None:
    msgs = [Message("t/0", i, act(f"u{i}", TODAY)) for i in range(10)]
    w = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {("t/0", 0): 6}))
    assert w.hll[TODAY] == {"u7", "u8", "u9"}
    assert w.shards[0].totals == {"e:activity": 3}
    assert w.last_offset == {"t/0": 9}


def test_seen_pairs_need_no_write_but_are_counted() -> None:
    msgs = [Message("t/0", 0, act("u1", TODAY)), Message("t/0", 1, act("u2", TODAY))]
    w = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {}, seen={"u1": TODAY}))
    assert w.hll == {TODAY: {"u2"}}
    assert w.shards[0].totals == {"e:activity": 2}


def test_old_days_get_no_hll_write() -> None:
    old = TODAY - KEYS.retention_days - 1
    w = fold([Message("t/0", 0, act("u1", old))], FoldContext(KEYS, DAYS, TODAY, {}))
    assert w.hll == {}
    assert w.shards[0].activity == {}


def test_dead_letters_and_other_types() -> None:
    msgs = [
        Message("t/1", 0, DeadLetter("late", "old")),
        Message("t/1", 1, Event("v1", 2, "u1", TODAY * DAY, campaign="spring")),
        Message("t/1", 2, Event("c1", 3, "u1", TODAY * DAY, campaign="spring")),
        Message("t/1", 3, Event("s1", 5, "u1", TODAY * DAY, survey="nps", score=9)),
        Message("t/1", 4, Event("g1", 1, "u1", TODAY * DAY + 5)),
        Message("t/1", 5, Event("x1", 4, "u1", TODAY * DAY + 9)),
    ]
    w = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {}))
    assert [m.offset for m in w.dead] == [0]
    plan = w.shards[0]
    assert plan.totals == {"dl:late": 1, "e:visit": 1, "e:conversion": 1, "e:survey": 1,
                           "e:signup": 1, "e:cancellation": 1}
    assert [(d, f) for d, f, _ in plan.counters] == [
        (TODAY, "v:spring"), (TODAY, "c:spring"), (TODAY, "nps:9")]
    assert [(u, ts, kind, day) for u, _, ts, kind, day, _ in plan.customer] == [
        ("u1", TODAY * DAY + 5, 0, TODAY), ("u1", TODAY * DAY + 9, 1, TODAY)]
    claim = plan.counters[0][2]
    assert claim.digest == digest("v1") and claim.origin == "t/1@1" and not claim.long
    assert plan.customer[0][5].long


def test_digest_is_stable_and_short() -> None:
    assert digest("abc") == digest("abc") != digest("abd")
    assert len(digest("x" * 128)) == 16


_events = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["u1", "u2", "u3", "u4"]),
              st.integers(-40, 0), st.sampled_from(["a", "b"])),
    max_size=40,
)


def _build(raw: list[tuple[int, str, int, str]]) -> list[Message]:
    out = []
    for i, (code, user, day, camp) in enumerate(raw):
        ev = Event(f"id{i}", code, user, (TODAY + day) * DAY + 1000, campaign=camp,
                   survey="nps" if code == 5 else None, score=7 if code == 5 else None)
        out.append(Message("t/0", i, ev))
    return out


@given(_events, st.randoms(use_true_random=False))
def test_fold_is_order_independent(raw: list[tuple[int, str, int, str]], rnd: object) -> None:
    msgs = _build(raw)
    shuffled = list(msgs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {}))
    b = fold(shuffled, FoldContext(KEYS, DAYS, TODAY, {}))
    assert a.hll == b.hll
    assert a.shards.keys() == b.shards.keys()
    for shard in a.shards:
        pa, pb = a.shards[shard], b.shards[shard]
        assert pa.totals == pb.totals
        assert {d: sorted(u) for d, u in pa.activity.items()} == {
            d: sorted(u) for d, u in pb.activity.items()}
        assert Counter((d, f) for d, f, _ in pa.counters) == Counter(
            (d, f) for d, f, _ in pb.counters)
        assert Counter(c[:5] for c in pa.customer) == Counter(c[:5] for c in pb.customer)


def test_users_spread_over_shards_and_buckets() -> None:
    ks = KeySpace(shards=4, buckets=16)
    places = {ks.user_shard_bucket(f"user-{i}") for i in range(2000)}
    assert {s for s, _ in places} == {0, 1, 2, 3}
    assert len(places) == 64


def test_repeat_within_a_batch_keeps_the_earlier_message_whatever_its_type() -> None:
    msgs = [
        Message("t/0", 0, Event("x", 2, "u1", TODAY * DAY, campaign="spring")),  # visit
        Message("t/1", 0, Event("x", 1, "u2", TODAY * DAY)),  # signup, same id, later
        Message("t/0", 1, Event("x", 5, "u1", TODAY * DAY, survey="nps", score=3)),
    ]
    w = fold(msgs, FoldContext(KEYS, DAYS, TODAY, {}))
    plan = w.shards[0]
    assert [(d, f) for d, f, _ in plan.counters] == [(TODAY, "v:spring")]
    assert plan.customer == []
    # every valid event is still counted
    assert plan.totals == {"e:visit": 1, "e:signup": 1, "e:survey": 1}

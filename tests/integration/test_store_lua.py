"""The store's Lua fold against a real redis-server, compared with the brute-force oracle.

Random small histories of signups, cancellations, activity, visits, conversions and
survey answers (dated around the churn window start and the first-week cohort edges),
with duplicate ids, are applied in random interleavings and batch splits, including
redelivered batches; every exact figure must equal the oracle's, unique counts within 3%.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.decode import Message
from stream.demo.localservers import RedisServer
from stream.events import decode
from stream.figures import compute
from stream.fold import FoldContext, fold
from stream.keys import KeySpace
from stream.store import store as store_module
from stream.store import wire as wire_module
from stream.store.store import Conflict, Store, StoreParams, connect
from stream.timebuckets import DayMapper, ms
from tests.support import oracle
from tests.support.direct import store_context

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
LATENESS_MS = 400 * 86_400_000


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def make_store(url: str, zone: str = "UTC", shards: int = 1) -> Store:
    client = connect(url, cluster=False)
    client.flushall()
    store = Store(client, KeySpace(shards=shards, buckets=8), StoreParams(zone, shards, 8))
    store.load_scripts()
    store.check_meta()
    return store


# Days relative to today that sit on the edges of every window.
_DAYS = st.sampled_from([0, -1, -6, -7, -8, -9, -15, -28, -29, -30, -31, -36, -37, -38, -39,
                         -45, -60, -120])
_HOURS = st.sampled_from([0, 1, 11, 23])


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    users = [f"user-{i}" for i in range(draw(st.integers(1, 6)))]
    out: list[bytes] = []
    n = draw(st.integers(1, 40))
    for i in range(n):
        kind = draw(st.sampled_from(["activity", "activity", "signup", "cancellation",
                                     "visit", "conversion", "survey"]))
        day = draw(_DAYS)
        ts = NOW + timedelta(days=day, hours=draw(_HOURS) - 12)
        ev: dict[str, Any] = {"event_id": f"e{i}", "type": kind,
                              "user_id": draw(st.sampled_from(users))}
        ev["ts"] = (ts.isoformat().replace("+00:00", "Z") if draw(st.booleans())
                    else ms(ts))
        if kind in ("visit", "conversion"):
            ev["campaign"] = draw(st.sampled_from(["a", "b"]))
        if kind == "survey":
            survey = draw(st.sampled_from(["nps", "csat"]))
            ev["survey"] = survey
            ev["score"] = draw(st.integers(0, 10) if survey == "nps" else st.integers(1, 5))
        out.append(json.dumps(ev).encode())
    # repeats: the same id again, sometimes with other content (the first folded wins)
    for _ in range(draw(st.integers(0, 5))):
        j = draw(st.integers(0, n - 1))
        again = json.loads(out[j])
        if again["type"] != "activity" and draw(st.booleans()):
            # the same id on another kind of event: still a repeat, the first one wins
            again.update(type=draw(st.sampled_from(["signup", "cancellation", "visit",
                                                    "conversion", "survey"])),
                         campaign="a", survey="nps", score=5)
        if draw(st.booleans()):
            again["ts"] = ms(NOW - timedelta(days=draw(st.integers(0, 40))))
        out.append(json.dumps(again).encode())
    return out


def apply_all(store: Store, values: list[bytes], rnd: random.Random,
              partitions: int = 3) -> list[bytes]:
    """Spread values over partitions, fold them in random batch interleavings with
    redeliveries; returns the values in the order they were first folded."""
    days = DayMapper("UTC")
    today = days.today(NOW)
    now_ms = ms(NOW)
    queues: list[list[Message]] = [[] for _ in range(partitions)]
    for v in values:
        p = rnd.randrange(partitions)
        queues[p].append(Message(f"t/{p}", len(queues[p]), decode(v, now_ms, LATENESS_MS), v))
    applied: dict[tuple[str, int], int] = {}
    order: list[bytes] = []
    pos = [0] * partitions
    while any(pos[p] < len(queues[p]) for p in range(partitions)):
        batch: list[Message] = []
        for p in range(partitions):
            take = rnd.randint(0, 4)
            batch += queues[p][pos[p]:pos[p] + take]
        if not batch:
            continue
        writes = fold(batch, store_context(store, days, today, applied))
        store.apply(writes, applied, today)
        for src, last in writes.last_offset.items():
            applied[(src, 0)] = last
        for m in batch:
            pos[int(m.src[2:])] = max(pos[int(m.src[2:])], m.offset + 1)
            assert m.value is not None
            order.append(m.value)
        if rnd.random() < 0.3:  # Kafka redelivers the batch: it must change nothing
            stale = {k: v for k, v in applied.items()}
            writes = fold(batch, store_context(store, days, today, stale))
            store.apply(writes, stale, today)
    return order


def assert_matches(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want), (got, want)
    for name, value in want.items():
        if name in oracle.UNIQUE:
            assert got[name] == pytest.approx(value, rel=0.03, abs=0.02), name
        elif isinstance(value, float):
            assert got[name] == pytest.approx(value, abs=1e-9), name
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("writes", ["fragments", "lists", "commands"])
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.large_base_example])
@given(values=histories(), rnd=st.randoms(use_true_random=False))
def test_lua_fold_matches_oracle(redis_url: str, values: list[bytes], rnd: random.Random,
                                 writes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`writes`: how activity reaches Redis. Small stores send a day's known bit numbers
    as bitmap fragments, here with every day's HyperLogLog merged dense as large batches
    do; "lists" forces the per-number BITFIELD path large stores take, with PFADDs as
    small batches do; "commands" is a build without the compiled formats (PFADD, and
    number lists)."""
    if writes == "fragments":
        monkeypatch.setattr(store_module, "HLL_DENSE_MIN", 1)
    elif writes == "lists":
        monkeypatch.setattr(wire_module, "FRAGMENT_BYTES_PER_USER", 0)
    elif writes == "commands":
        monkeypatch.setattr(store_module, "_redisformats", None)
        monkeypatch.setattr(wire_module, "_redisformats", None)
    store = make_store(redis_url)
    try:
        order = apply_all(store, values, rnd)
        got = compute(store.read(DayMapper("UTC").today(NOW)))
        want = oracle.compute_figures(order, NOW)
        assert_matches(got, want)
    finally:
        store.close()


def test_stale_offsets_are_refused(redis_url: str) -> None:
    store = make_store(redis_url)
    days = DayMapper("UTC")
    today = days.today(NOW)
    v = json.dumps({"event_id": "s1", "type": "signup", "user_id": "u",
                    "ts": ms(NOW - timedelta(days=3))}).encode()
    batch = [Message("t/0", 0, decode(v, ms(NOW), LATENESS_MS), v)]
    store.apply(fold(batch, store_context(store, days, today, {})), {}, today)
    before = compute(store.read(today))
    # A second worker that still believes nothing was applied must not apply again.
    with pytest.raises(Conflict) as info:
        store.apply(fold(batch, store_context(store, days, today, {})), {}, today)
    assert info.value.stored == 0
    assert compute(store.read(today)) == before
    assert before["customers"] == 1 and before["events_total"]["signup"] == 1
    store.close()


def test_store_refuses_other_timezone(redis_url: str) -> None:
    from stream.store.store import StoreMismatch

    make_store(redis_url).close()
    client = connect(redis_url, cluster=False)
    other = Store(client, KeySpace(shards=1, buckets=8), StoreParams("Europe/Berlin", 1, 8))
    with pytest.raises(StoreMismatch, match="STREAM_TIMEZONE=UTC"):
        other.check_meta()
    other.close()


def test_sweep_compacts_and_keeps_figures(redis_url: str) -> None:
    from stream.store.sweep import sweep

    store = make_store(redis_url)
    days = DayMapper("UTC")
    today = days.today(NOW)
    values = []
    for i in range(50):  # active 45 days ago: no record, a bit in that day's bitmap
        values.append(json.dumps({"event_id": f"old{i}", "type": "activity",
                                  "user_id": f"gone-{i}", "ts": ms(NOW - timedelta(days=45))}))
    for i in range(20):  # recent activity, and customers: only customers have a record
        values.append(json.dumps({"event_id": f"new{i}", "type": "activity",
                                  "user_id": f"here-{i}", "ts": ms(NOW - timedelta(days=2))}))
        values.append(json.dumps({"event_id": f"sig{i}", "type": "signup",
                                  "user_id": f"cust-{i}", "ts": ms(NOW - timedelta(days=200))}))
    raw = [v.encode() for v in values]
    batch = [Message("t/0", i, decode(v, ms(NOW), LATENESS_MS), v) for i, v in enumerate(raw)]
    store.apply(fold(batch, store_context(store, days, today, {})), {}, today)
    before = compute(store.read(today))

    def records() -> int:
        return sum(int(store.client.hlen(f"es:{{es0}}:u:{b}")) for b in range(8))

    assert records() == 20
    assert sweep(store, today) == 0
    # the 45-day-old activity is in its day's bitmap, under one bit per user
    old = store.client.get(store.keys.tag(0) + f"a:{today - 45}")
    assert sum(bin(b).count("1") for b in old) == 50
    assert compute(store.read(today)) == before == oracle.compute_figures(raw, NOW) | {
        k: before[k] for k in oracle.UNIQUE if k in before}
    # With a 100-day horizon the signups of 200 days ago are folded into one field per
    # difference array, and every figure stays the same.
    short = Store(store.client, KeySpace(shards=1, buckets=8, max_lateness_days=100),
                  store.params)
    assert sweep(short, today + 10) > 0
    cust = {k.decode(): int(v) for k, v in store.client.hgetall("es:{es0}:cust").items()}
    assert all(int(k.split(":")[1]) >= today + 10 - 140 for k in cust)
    assert compute(store.read(today)) == before
    store.close()


def test_shards_ahead_after_a_partial_batch_never_double_count(redis_url: str) -> None:
    """A crash between the per-shard calls leaves one shard ahead; redelivery in other
    batch boundaries must apply each message exactly once in every shard."""
    from stream.store.scripts import sha
    from stream.store.wire import encode_apply

    client = connect(redis_url, cluster=False)
    client.flushall()
    keys = KeySpace(shards=2, buckets=8)
    store = Store(client, keys, StoreParams("UTC", 2, 8))
    store.load_scripts()
    days = DayMapper("UTC")
    today = days.today(NOW)
    raw = [json.dumps({"event_id": f"v{i}", "type": "visit", "user_id": f"user-{i % 7}",
                       "campaign": "c", "ts": ms(NOW - timedelta(hours=i))}).encode()
           for i in range(20)]
    msgs = [Message("t/0", i, decode(v, ms(NOW), LATENESS_MS), v) for i, v in enumerate(raw)]
    store.apply(fold(msgs[:10], FoldContext(keys, days, today, {})), {}, today)
    applied = store.load_offsets(["t/0"])
    assert applied == {("t/0", 0): 9, ("t/0", 1): 9}
    # Only shard 1 gets batch 10..19 (the process died before shard 0's call).
    w = fold(msgs[10:], FoldContext(keys, days, today, applied))
    look, ws, wl, xs, xl = keys.id_generations(today)
    args = encode_apply(w.shards.get(1) or type(next(iter(w.shards.values())))(),
                        keys.tag(1), ["t/0", 9, 19],
                        {"il": look, "ws": ws, "wl": wl, "xs": xs, "xl": xl,
                         "w": "t", "wc": -1, "wt": 60},
                        keys.retention_days, keys.bitmap_days, {}, keys.user_shard_bucket)
    client.evalsha(sha("apply"), 1, keys.offsets(1), *args)
    # Restart: resume at the lowest shard's offset, redelivered in other boundaries.
    applied = store.load_offsets(["t/0"])
    assert store.resume_offset(applied, "t/0") == 10
    for chunk in (msgs[10:14], msgs[14:20]):
        store.apply(fold(chunk, FoldContext(keys, days, today, applied)), applied, today)
        applied = store.load_offsets(["t/0"])
    assert applied == {("t/0", 0): 19, ("t/0", 1): 19}
    got = compute(store.read(today))
    want = oracle.compute_figures(raw, NOW)
    assert got["events_total"] == want["events_total"]
    assert got["conversion_ratio"] == want["conversion_ratio"] == {"c": 0.0}
    visits = sum(int(v) for s in (0, 1) for d in range(today - 2, today + 1)
                 for v in client.hgetall(keys.counters(s, d)).values())
    assert visits == 20
    store.close()


def test_numbers_redis_lost_are_asked_again(redis_url: str) -> None:
    """Redis lost a batch that gave this store bit numbers (restarted from an older
    file: the batch's offsets, bits and numbers are gone together), and another worker
    then got the same numbers for its own users: the apply script refuses the store's
    stale numbers, the store forgets them and asks again, and every user keeps a bit of
    its own."""
    store = make_store(redis_url)
    days = DayMapper("UTC")
    today = days.today(NOW)
    tag = store.keys.tag(0)

    def batch(users: list[str], first: int, src: str = "t/0") -> list[Message]:
        raw = [json.dumps({"event_id": f"e-{u}", "type": "activity", "user_id": u,
                           "ts": ms(NOW)}).encode() for u in users]
        return [Message(src, first + i, decode(v, ms(NOW), LATENESS_MS), v)
                for i, v in enumerate(raw)]

    def number(user: str) -> int:
        return int(store.client.hget(tag + f"n:{store.keys.user_shard_bucket(user)[1]}", user))

    mine = [f"u{i}" for i in range(5)]
    later = [f"v{i}" for i in range(5)]
    theirs = [f"w{i}" for i in range(5)]
    store.apply(fold(batch(mine, 0), store_context(store, days, today, {})), {}, today)
    applied = store.load_offsets(["t/0"])
    store.apply(fold(batch(later, 5), store_context(store, days, today, applied)), applied,
                today)
    assert sorted(int(store._nums[u]) for u in later) == [5, 6, 7, 8, 9]
    # Redis loses the second batch: its offsets, its bits, its numbers, the witness.
    store.client.hset(store.keys.offsets(0), "t/0", 4)
    for u in later:
        store.client.hdel(tag + f"n:{store.keys.user_shard_bucket(u)[1]}", u)
        store.client.setbit(tag + f"a:{today}", number_of := int(store._nums[u]), 0)
        assert number_of >= 5
    store.client.set(tag + "seq", 5)
    store.client.set(tag + f"w:{store._token}", 1)
    # Another worker gets those numbers for its own users.
    other = Store(store.client, store.keys, store.params)
    other.load_scripts()
    other.apply(fold(batch(theirs, 0, "t/1"), store_context(store, days, today, {})), {}, today)
    assert sorted(int(other._nums[u]) for u in theirs) == [5, 6, 7, 8, 9]
    # The store re-reads from Redis's offsets: its cache still has the lost numbers.
    applied = store.load_offsets(["t/0"])
    store.apply(fold(batch([*later, "x0"], 5), store_context(store, days, today, applied)),
                applied, today)
    assert store.load_offsets(["t/0"]) == {("t/0", 0): 10}
    numbers = [number(u) for u in [*mine, *later, "x0", *theirs]]
    assert sorted(numbers) == list(range(16))
    assert all(store._nums[u] == number(u) for u in [*later, "x0"])
    bitmap = store.client.get(tag + f"a:{today}")
    assert sum(bin(b).count("1") for b in bitmap) == 16
    store.close()


def test_a_scratch_key_left_over_adds_no_bits(redis_url: str) -> None:
    """Known users' bits go as a bitmap fragment through a scratch key. One left over by
    a call that failed half-way (Redis out of memory) must not be ORed into a day."""
    store = make_store(redis_url)
    days = DayMapper("UTC")
    today = days.today(NOW)
    tag = store.keys.tag(0)
    users = [f"u{i}" for i in range(10)]

    def batch(when: datetime, first: int) -> list[Message]:
        raw = [json.dumps({"event_id": f"e-{u}-{first}", "type": "activity", "user_id": u,
                           "ts": ms(when)}).encode() for u in users]
        return [Message("t/0", first + i, decode(v, ms(NOW), LATENESS_MS), v)
                for i, v in enumerate(raw)]

    store.apply(fold(batch(NOW, 0), store_context(store, days, today, {})), {}, today)
    assert all(u in store._nums for u in users)  # known now: the next batch is a fragment
    store.client.set(tag + "scratch", b"\xff" * 64)
    applied = store.load_offsets(["t/0"])
    yesterday = NOW - timedelta(days=1)
    store.apply(fold(batch(yesterday, 10), store_context(store, days, today, applied)),
                applied, today)
    assert store.client.bitcount(tag + f"a:{today - 1}") == 10
    assert store.client.bitcount(tag + f"a:{today}") == 10
    assert not store.client.exists(tag + "scratch")
    store.close()

"""Campaign cardinality against the oracle: 700 campaigns of varied visit counts with
ties at the cut, names longer than 128 characters, a campaign named `other`, over more
than 30 days, folded into a real redis-server and read back as `report` reads it: today's
figures (the rolling windows of lua/campaigns.lua), the next days' (windows moved a day at
a time, late events on the way), a past day (`report --day`, summed from the per-day
counters), and with 1 and 3 shards. Redis must hold no name longer than 128 characters."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stream import figures
from stream.demo.localservers import RedisServer, TansuBroker
from stream.store.store import Store
from stream.timebuckets import DayMapper
from tests.support import oracle
from tests.support.direct import fold_messages, fresh_store
from tests.support.kafka import Topics, produce
from tests.support.workers import WorkerProcess, folded_total, report_json, wait_until, worker_env

ZONE = "UTC"
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
DAY_MS = 86_400_000
LONG_NAMES = ("L" * 129, "é" * 200, "spring-" + "x" * 5000)


def _event(rnd: random.Random, n: int, etype: str, campaign: str, days_ago: float,
           now: datetime) -> tuple[str, bytes, bytes]:
    """One visit or conversion; its topic is that of the day `now` (each call of
    fold_messages numbers its offsets from 0)."""
    ts = int(now.timestamp() * 1000 - days_ago * DAY_MS) - rnd.randrange(3_600_000)
    user = f"u{rnd.randrange(300)}"
    body = {"event_id": f"{etype}-{n}", "type": etype, "user_id": user, "ts": ts,
            "campaign": campaign}
    topic = f"campaigns.{now.date()}"
    return topic, user.encode(), json.dumps(body).encode()


def campaign_stream(seed: int, now: datetime, first: int = 0) -> list[tuple[str, bytes, bytes]]:
    """Over 700 campaigns in the window: visit counts from a few values (ties everywhere,
    the cut at 500 inside a tie), random names (their order is not the order of first
    visits), some unicode; conversions; the three long names and `other` with many
    visits; days 0 to 33 ago (so some fall outside the 30-day windows); a few repeated event ids."""
    rnd = random.Random(seed)
    names = {f"c{rnd.randrange(10**6)}" for _ in range(760)} | {f"ü{i}" for i in range(4)}
    names |= {"Z", "a" * 128, "other", "日本", "é"}
    out = []
    n = first
    for name in sorted(names):
        for _ in range(rnd.choice([1, 1, 2, 2, 3, 4, 6])):
            out.append(_event(rnd, n, "visit", name, rnd.uniform(0, 33), now))
            n += 1
        for _ in range(rnd.choice([0, 0, 1, 2])):
            out.append(_event(rnd, n, "conversion", name, rnd.uniform(0, 33), now))
            n += 1
    for name in LONG_NAMES:
        for _ in range(30):
            etype = rnd.choice(["visit", "visit", "conversion"])
            out.append(_event(rnd, n, etype, name, rnd.uniform(0, 29), now))
            n += 1
    # a campaign with conversions only, and repeats of earlier events (no figure changes)
    out.append(_event(rnd, n, "conversion", "only-conversions", 1, now))
    out += rnd.sample(out, 40)
    rnd.shuffle(out)
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


def conversion(store: Store, today: int) -> dict[str, Any]:
    got = figures.compute(store.read(today, previous=True))
    return {k: got.get(k) for k in ("conversion_ratio", "previous_day_conversion_ratio")}


def want(values: list[bytes | None], now: datetime, cap: int = 500) -> dict[str, Any]:
    got = oracle.compute_figures(values, now, ZONE, campaign_max_series=cap)
    prev = oracle.previous_day_figures(values, now, ZONE, campaign_max_series=cap)
    return {"conversion_ratio": got["conversion_ratio"],
            "previous_day_conversion_ratio": prev["previous_day_conversion_ratio"]}


def window_visits(values: list[bytes | None], now: datetime) -> Counter[str]:
    """Visits by campaign over the 30 days ending today, from the folded events."""
    first = now.date() - timedelta(days=29)
    return Counter(e.campaign for e in oracle.run(values, now).folded
                   if e.type == "visit" and e.campaign is not None
                   and datetime.fromtimestamp(e.ts_ms / 1000, UTC).date() >= first)


def assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert list(got[name]) == list(value), name
        assert got[name] == pytest.approx(value, abs=1e-12), name


def assert_no_long_names(store: Store) -> None:
    """What Redis holds per campaign: no name longer than 128 characters anywhere."""
    client = store.client
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"hash":
            fields = client.hkeys(key)
        elif kind == b"zset":
            fields = client.zrange(key, 0, -1)
        else:
            continue
        assert all(len(f.decode()) <= 130 for f in fields), key


@pytest.mark.parametrize("shards", [1, 3])
def test_cap_against_oracle(server: RedisServer, shards: int) -> None:
    store = fresh_store(server.url, ZONE, shards=shards)
    messages = campaign_stream(1, NOW)
    values = fold_messages(store, messages, NOW, ZONE, seed=shards)
    today = DayMapper(ZONE).today(NOW)

    expected = want(values, NOW)
    visits = window_visits(values, NOW)
    assert len(visits) > 700
    # the cut at 500 is inside a tie: names decide there
    ranked = sorted((c for c in visits if len(c) <= 128 and c != "other"),
                    key=lambda c: (-visits[c], c))
    assert visits[ranked[499]] == visits[ranked[500]]
    assert len(expected["conversion_ratio"]) == 501
    assert "other" in expected["conversion_ratio"]
    assert not any(len(c) > 128 for c in expected["conversion_ratio"])
    assert "a" * 128 in expected["conversion_ratio"]
    got = conversion(store, today)
    assert_same(got, expected)
    # a smaller cap, on the same store (read by another setting)
    small = Store(store.client, store.keys, store.params, campaign_max_series=7)
    assert_same(conversion(small, today), want(values, NOW, cap=7))
    zero = Store(store.client, store.keys, store.params, campaign_max_series=0)
    assert_same(conversion(zero, today), want(values, NOW, cap=0))
    assert_no_long_names(store)

    # The windows move a day at a time: three more days, each with new events (late ones
    # among them) folded before the read.
    for step in range(1, 4):
        now = NOW + timedelta(days=step)
        more = campaign_stream(1 + step, now, first=100_000 * step)[:400]
        values += fold_messages(store, more, now, ZONE, seed=step)
        assert_same(conversion(store, today + step), want(values, now))

    # A past day (`report --day`): from the per-day counters, the same rule.
    past = today + 1
    got_past = figures.compute(store.read(past, previous=True))
    as_of = oracle.figures_as_of(values, NOW + timedelta(days=3), NOW.date() + timedelta(days=1),
                                 ZONE)
    assert_same({"conversion_ratio": got_past["conversion_ratio"]},
                {"conversion_ratio": as_of["conversion_ratio"]})

    # Windows built afresh (none kept, or more than 31 days behind) equal moved ones.
    now = NOW + timedelta(days=3)
    store.client.delete(*[k for s in range(shards) for k in
                          (store.keys.tag(s) + "cw:0", store.keys.tag(s) + "cwv:0")])
    assert_same(conversion(store, today + 3), want(values, now))
    # ... and windows 17 days behind catch up a day per call
    assert_same(conversion(store, today + 20), want(values, NOW + timedelta(days=20)))
    store.close()


def test_worker_metrics_end_to_end(broker: TansuBroker, redis_server: RedisServer,
                                   topics: Topics) -> None:
    """Through Kafka, the worker and `/metrics`: at most 500 + 1 campaign series, equal to
    the oracle's; a 200 KB campaign name is counted as `other` and appears nowhere;
    `report --json` says the same, and follows STREAM_CAMPAIGN_MAX_SERIES."""
    now = datetime.now(UTC)
    if (now + timedelta(minutes=10)).date() != now.date():
        pytest.skip("too close to midnight for stable figures")
    huge = "h" * 200_000
    messages = campaign_stream(5, now)
    rnd = random.Random(5)
    for n in range(3):
        messages.append(_event(rnd, 900_000 + n, "visit", huge, 2, now))
    messages.append(_event(rnd, 900_009, "conversion", huge, 1, now))
    messages = [(topics.conversions, k, v) for _, k, v in messages]
    values = [v for _, _, v in messages]
    asyncio.run(produce(broker.bootstrap, messages))
    env = worker_env(broker.bootstrap, redis_server.url, topics.env())
    with WorkerProcess(env) as worker:
        wait_until(lambda: folded_total(report_json(env)) >= len(messages), 120,
                   "the worker to fold every message", interval=1.0)
        expected = want(values, now)
        assert len(expected["conversion_ratio"]) == 501
        assert_same(report_json(env), expected)

        status, body = worker.get("/metrics")
        assert status == 200
        assert "h" * 129 not in body
        got: dict[str, dict[str, float]] = {name: {} for name in expected}
        for (name, labels), value in worker.metrics().items():
            short = name.removeprefix("engagement_")
            if short in got:
                got[short][dict(labels)["campaign"]] = value
        assert_same({k: dict(sorted(v.items())) for k, v in got.items()}, expected)
        assert worker.stop() == 0

    # `report` follows the setting too
    few = report_json({**env, "STREAM_CAMPAIGN_MAX_SERIES": "20"})
    assert_same(few, want(values, now, cap=20))
    assert datetime.now(UTC).date() == now.date(), "midnight passed during the test"


def test_read_is_bounded_by_max_series(server: RedisServer) -> None:
    """A read with 5000 campaign names (2 shards, 5 series) brings 2 x (2 x 5 + 1) campaign
    fields to Python at most, and Redis reads no per-day counters hash whole: the only
    HGETALLs are the customer, totals and scan hashes, whatever the campaigns."""
    store = fresh_store(server.url, ZONE, shards=2)
    rnd = random.Random(3)
    messages = [_event(rnd, n, rnd.choice(["visit", "visit", "conversion"]),
                       f"n{n % 5000}", rnd.uniform(0, 40), NOW) for n in range(12_000)]
    values = fold_messages(store, messages, NOW, ZONE)
    today = DayMapper(ZONE).today(NOW)
    small = Store(store.client, store.keys, store.params, campaign_max_series=5)
    small.read(today)  # the windows start at the first read
    store.client.config_resetstat()
    raw = small.read(today, previous=True)
    stats = store.client.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] == 2 * 2 + 1
    for r in (raw, raw.previous):
        assert r is not None
        assert len([f for f in r.window_counters if f[:2] in ("v:", "c:")]) <= 2 * (2 * 5 + 1)
    assert_same(conversion(small, today), want(values, NOW, cap=5))


def test_ties_by_name_in_code_point_order(server: RedisServer) -> None:
    """Redis orders equal visit counts by the names' bytes: for UTF-8 that is code point
    order, the order of the oracle's names (not UTF-16's: U+FFFD before U+1F600)."""
    store = fresh_store(server.url, ZONE)
    rnd = random.Random(4)
    names = ["😀", "\ufffd", "日本", "ü", "é", "z", "e", "E"]
    messages = [_event(rnd, n, "visit", name, 1, NOW) for n, name in enumerate(names * 2)]
    messages.append(_event(rnd, 99, "visit", "few", 1, NOW))
    values = fold_messages(store, messages, NOW, ZONE)
    today = DayMapper(ZONE).today(NOW)
    for cap in range(len(names) + 1):
        capped = Store(store.client, store.keys, store.params, campaign_max_series=cap)
        assert_same(conversion(capped, today), want(values, NOW, cap=cap))
    top = Store(store.client, store.keys, store.params, campaign_max_series=6)
    assert list(conversion(top, today)["conversion_ratio"]) == sorted(
        ["E", "e", "z", "é", "ü", "日本", "other"])

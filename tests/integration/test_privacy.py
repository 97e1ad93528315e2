"""Privacy (contract section 7) against real redis-server and Redis Cluster processes and
the brute-force oracle.

With STREAM_USER_ID_KEY: every figure equals the oracle's, and no key, field or value in
Redis holds a user id of the input. `forget` of customers, of active users and of both:
every exact figure equals the oracle's recomputed without their activity, signup and
cancellation events (the HyperLogLog counts and the totals kept), no trace of them is
left, forgetting twice or an unknown id changes nothing, a later event of a forgotten
user counts as a new user's while a redelivered old one stays a duplicate. A store built
with one key refuses another in one line. Live: a worker folding while `forget` runs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stream.demo.localservers import RedisCluster, RedisServer, TansuBroker
from stream.figures import compute
from stream.forget import forget
from stream.keys import KeySpace
from stream.privacy import UserIdHasher, fingerprint
from stream.segments import Segments
from stream.store.store import Client, Store, StoreMismatch, StoreParams, connect
from stream.timebuckets import ms
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.feeder import Feeder
from tests.support.kafka import Topics, consume_all, produce
from tests.support.workers import (
    PURE_PATH_LINE,
    ROOT,
    WorkerProcess,
    path_env,
    report_json,
    wait_until,
    worker_env,
)

KEY = "test-user-id-key-0123456789abcdef"
BUCKETS = 64
DIMS = ("plan",)
SCAN = ("days_active_users", "lifecycle_users", "previous_day_days_active_users",
        "previous_day_lifecycle_users")


@pytest.fixture(scope="module")
def single() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


def make_store(client: Client, shards: int, key: str | None = KEY,
               segments: bool = False) -> Store:
    client.flushall()
    hasher = UserIdHasher(key) if key is not None else None
    keys = KeySpace(shards=shards, buckets=max(1, BUCKETS // shards))
    store = Store(client, keys, StoreParams("UTC", shards, BUCKETS, fingerprint(hasher)),
                  segments=Segments(DIMS, 20) if segments else None, user_ids=hasher)
    store.load_scripts()
    store.check_meta()
    return store


def expected(values: list[bytes | None], now: datetime,
             forgotten: dict[str, int] | None = None, segments: bool = False
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(exact figures without the forgotten users' events, figures that keep them)."""
    exact = oracle.compute_figures(values, now, forgotten=forgotten)
    exact.update(oracle.previous_day_figures(values, now, forgotten=forgotten))
    exact.update(oracle.activity_figures(values, now, forgotten=forgotten))
    kept = oracle.compute_figures(values, now)
    kept.update(oracle.previous_day_figures(values, now))
    if segments:
        exact.update(oracle.segment_figures(values, now, DIMS, forgotten=forgotten))
        kept.update(oracle.segment_figures(values, now, DIMS))
    return exact, kept


def assert_figures(got: dict[str, Any], exact: dict[str, Any], kept: dict[str, Any]) -> None:
    """Exact figures equal (floats to 1e-9); unique counts, which forget cannot take
    apart, within HyperLogLog error of the figures that keep the forgotten users."""
    for name, value in exact.items():
        if name in oracle.UNIQUE_WITH_PREVIOUS_DAY:
            assert got.get(name) == pytest.approx(kept[name], rel=0.03, abs=0.02), name
        elif name.startswith("segment_"):
            for dim, per in value.items():
                for v, figure in per.items():
                    if name in oracle.SEGMENT_UNIQUE:
                        want = kept[name][dim][v]
                        assert got[name][dim][v] == pytest.approx(want, rel=0.03, abs=0.02)
                    else:
                        assert got[name][dim][v] == pytest.approx(figure, abs=1e-9), (
                            name, dim, v)
                assert set(got[name][dim]) == set(per), name
        elif name == "events_total":
            assert got[name] == kept[name], name  # the totals keep every event
        else:
            assert name in got, name
            assert _close(got[name], value), (name, got[name], value)
    for name in ("calendar_month_active_users", "first_week_active_ratio", "churn_ratio"):
        assert (name in got) == (name in exact), name


def _close(got: Any, want: Any) -> bool:
    """Equal, floats to 1e-9, in nested dicts too."""
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) == set(want) and all(
            _close(got[k], v) for k, v in want.items())
    return bool(got == pytest.approx(want, abs=1e-9))


def redis_dump(client: Client) -> dict[bytes, Any]:
    """Every key with its value: hashes as dicts, sets as sets, strings as bytes, sorted
    sets as member -> score."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"set":
            out[key] = client.smembers(key)
        elif kind == b"string":
            out[key] = client.get(key)
        elif kind == b"zset":
            out[key] = {m: repr(s).encode() for m, s in client.zrange(key, 0, -1, withscores=True)}
        else:
            raise AssertionError(f"unexpected {kind!r} key {key!r}")
    return out


def blob(dump: dict[bytes, Any]) -> bytes:
    parts: list[bytes] = []
    for key, value in dump.items():
        parts.append(key)
        if isinstance(value, dict):
            for f, v in value.items():
                parts += (f, v)
        elif isinstance(value, set):
            parts += sorted(value)
        else:
            parts.append(value)
    return b"\0".join(parts)


def user_ids(values: list[bytes | None]) -> set[str]:
    """Every user id of the input, valid event or not (6 characters at least, so that
    none turns up by chance inside binary HyperLogLogs and bitmaps)."""
    out = set()
    for v in values:
        try:
            obj = json.loads(v or b"")
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("user_id"), str):
            out.add(obj["user_id"])
    return {u for u in out if len(u.encode()) >= 6}


def found(ids: set[str], data: bytes) -> set[str]:
    return {u for u in ids if u.encode() in data}


def users_of(values: list[bytes | None], now: datetime) -> dict[str, set[str]]:
    """user -> the types of their accepted events."""
    out: dict[str, set[str]] = {}
    for e in oracle.run(values, now).accepted:
        out.setdefault(e.user_id, set()).add(e.type)
    return out


# -- hashing --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["single", "cluster"])
def test_with_a_key_every_figure_matches_and_no_user_id_is_stored(
        where: str, single: RedisServer, cluster: RedisCluster) -> None:
    data = ds.generate_stable(size=4000, seed=21)
    values = data.values()
    if where == "single":
        store = make_store(connect(single.url, cluster=False), 1)
    else:
        store = make_store(connect(cluster.url, cluster=True), 16)
    feeder = Feeder(store, data.now)
    feeder.feed(values)
    exact, kept = expected(values, data.now)
    assert_figures(feeder.figures(previous=True, scanned=True), exact, kept)
    ids = user_ids(values)
    assert len(ids) > 300
    assert found(ids, blob(redis_dump(store.client))) == set()
    # the check can fail: a store without the key holds the ids
    plain = make_store(connect(single.url, cluster=False), 1, key=None)
    Feeder(plain, data.now).feed(values[:500])
    assert found(ids, blob(redis_dump(plain.client)))
    store.close()
    plain.close()


def test_a_store_refuses_another_key_or_none_in_one_line(single: RedisServer) -> None:
    client = connect(single.url, cluster=False)
    make_store(client, 1)
    for other in ("another-key-0123456789abcdef", None):
        h = UserIdHasher(other) if other else None
        store = Store(client, KeySpace(shards=1, buckets=BUCKETS),
                      StoreParams("UTC", 1, BUCKETS, fingerprint(h)), user_ids=h)
        for record in (True, False):
            with pytest.raises(StoreMismatch) as err:
                store.check_meta(record=record)
            assert "STREAM_USER_ID_KEY" in str(err.value) and "\n" not in str(err.value)
    # a store built with no key refuses a key, and one built before the setting existed
    # (no `user_id_key` in its meta record) counts as built with none
    make_store(client, 1, key=None)
    client.hdel("es:meta", "user_id_key")
    keyed = Store(client, KeySpace(shards=1, buckets=BUCKETS),
                  StoreParams("UTC", 1, BUCKETS, fingerprint(UserIdHasher(KEY))),
                  user_ids=UserIdHasher(KEY))
    with pytest.raises(StoreMismatch, match="without STREAM_USER_ID_KEY"):
        keyed.check_meta()
    # through the command line: one line on stderr, exit code 2, no key in it
    env = {"STREAM_REDIS_URL": single.url, "STREAM_USER_ID_KEY": KEY, "PYTHONPATH": str(ROOT),
           "STREAM_USER_BUCKETS": str(BUCKETS), "PATH": "/usr/bin:/bin"}
    for command in (["report", "--json"], ["forget", "someone"]):
        out = subprocess.run([sys.executable, "-m", "stream", *command], env=env,
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "STREAM_USER_ID_KEY" in out.stderr
        assert KEY not in out.stderr and KEY not in out.stdout
    client.close()


# -- forget ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["customers", "active", "both"])
def test_forget_leaves_every_exact_figure_as_without_the_users(
        who: str, single: RedisServer) -> None:
    data = ds.generate_stable(size=4000, seed=31)
    values = data.values()
    values = [_with_plan(v, i) for i, v in enumerate(values)]
    store = make_store(connect(single.url, cluster=False), 1, segments=True)
    feeder = Feeder(store, data.now)
    feeder.feed(values)
    feeder.figures(previous=True, scanned=True)  # a scan exists: forget must redo it
    types = users_of(values, data.now)
    customers = sorted(u for u, t in types.items() if t & {"signup", "cancellation"})
    active = sorted(u for u, t in types.items() if t == {"activity"} or
                    t == {"activity", "visit"})
    pick = {"customers": customers[::5], "active": active[::4],
            "both": customers[1::6] + active[1::5]}[who]
    assert len(pick) >= 10
    gone = dict.fromkeys(pick, len(values))
    erased = forget(store, [*pick, *pick[:3]], feeder.today)
    exact, kept = expected(values, data.now, gone, segments=True)
    # A picked user whose only events repeat an earlier event id (the dataset's
    # "-other" users) left nothing in the store: erased counts only the others.
    assert erased == exact["users_forgotten_total"] >= len(pick) - 3
    got = compute(store.read(feeder.today, previous=True))
    assert got["users_forgotten_total"] == erased
    assert_figures(got, exact, kept)
    hashed = {store.user_ids(u) for u in pick} if store.user_ids else set()
    data_now = blob(redis_dump(store.client))
    assert found(hashed | user_ids(values), data_now) == set()
    store.close()


def _with_plan(value: bytes | None, i: int) -> bytes | None:
    """Events with a `plan` prop on two thirds of them, so segment figures have values."""
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return value
    if not isinstance(obj, dict) or "props" in obj or i % 3 == 0:
        return value
    obj["props"] = {"plan": ["free", "pro"][i % 2]}
    return json.dumps(obj).encode()


def test_forget_twice_or_unknown_changes_nothing_and_later_events_are_new(
        single: RedisServer) -> None:
    data = ds.generate_stable(size=3000, seed=41)
    values = data.values()
    store = make_store(connect(single.url, cluster=False), 1)
    feeder = Feeder(store, data.now)
    feeder.feed(values)
    feeder.figures(previous=True, scanned=True)
    types = users_of(values, data.now)
    both = sorted(u for u, t in types.items() if {"activity", "signup"} <= t)[:12]
    assert forget(store, both, feeder.today) == len(both)
    before = redis_dump(store.client)
    assert forget(store, both, feeder.today) == 0
    assert forget(store, ["nobody-ever-seen", "another-unknown"], feeder.today) == 0
    assert redis_dump(store.client) == before
    # a later event of a forgotten user is a new user's; an old one redelivered by Kafka
    # (same partition and offset) and an old signup sent again (same event id) change
    # nothing
    now_ms = ms(data.now)
    later = []
    for n, u in enumerate(both[:6]):
        later.append(json.dumps({"event_id": f"later-a{n}", "type": "activity",
                                 "user_id": u, "ts": now_ms - 60_000}).encode())
        later.append(json.dumps({"event_id": f"later-s{n}", "type": "signup",
                                 "user_id": u, "ts": now_ms - 9 * 86_400_000}).encode())
    old_signups = [v for v in values if v and b'"signup"' in v
                   and any(u.encode() in v for u in both)]
    assert old_signups
    feeder.apply_values([(v, None) for v in later + old_signups])
    feeder.apply_values([(v, ("t/0", 0)) for v in values[:1]])  # a Kafka redelivery
    forgotten = dict.fromkeys(both, len(values))
    everything = values + later + old_signups
    exact, kept = expected(everything, data.now, forgotten)
    got = feeder.figures(previous=True, scanned=True)
    assert_figures(got, exact, kept)
    store.close()


def test_forget_on_a_cluster(cluster: RedisCluster) -> None:
    data = ds.generate_stable(size=4000, seed=51)
    values = data.values()
    store = make_store(connect(cluster.url, cluster=True), 16)
    feeder = Feeder(store, data.now)
    feeder.feed(values)
    types = users_of(values, data.now)
    pick = sorted(u for u, t in types.items() if t & {"activity", "signup", "cancellation"})
    pick = pick[::3]
    exact, kept = expected(values, data.now, dict.fromkeys(pick, len(values)))
    assert forget(store, pick, feeder.today) == exact["users_forgotten_total"] > 100
    assert_figures(feeder.figures(previous=True, scanned=True), exact, kept)
    hashed = {store.user_ids(u) for u in pick} if store.user_ids else set()
    assert found(hashed | user_ids(values), blob(redis_dump(store.client))) == set()
    store.close()


def test_forget_beside_a_worker_with_cached_numbers(single: RedisServer) -> None:
    """A worker that cached users' numbers and knows them active today when another
    process forgets them: its next batch is refused, and folded again without its caches,
    so a forgotten user's new activity of the same day is neither skipped (`seen`) nor
    set under the old number."""
    now = datetime.now().astimezone()
    store = make_store(connect(single.url, cluster=False), 1)
    worker = Feeder(store, now)
    now_ms = ms(now)

    def act(i: int, user: str, days_back: int = 0) -> bytes:
        return json.dumps({"event_id": f"e{i}", "type": "activity", "user_id": user,
                           "ts": now_ms - days_back * 86_400_000 - 60_000}).encode()

    first = [act(i, f"user-{i % 20:03d}", i % 3) for i in range(60)]
    worker.feed(first)
    assert store.user_ids is not None
    assert worker.seen.get(store.user_ids("user-003")) == worker.today
    other = Store(store.client, store.keys, store.params,  # the forget command's
                  segments=store.segments, user_ids=store.user_ids)
    assert forget(other, ["user-003", "user-004"], worker.today) == 2
    second = [act(100 + i, f"user-{i % 6:03d}") for i in range(12)]
    worker.feed(second)
    assert worker.refused == 1
    values = first + second
    exact, _ = expected(values, now, {"user-003": len(first), "user-004": len(first)})
    got = worker.figures(previous=True, scanned=True)
    assert {n: got[n] for n in SCAN} == {n: exact[n] for n in SCAN}
    store.close()


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "path"), [("single", "compiled"), ("cluster", "compiled"),
                                             ("single", "pure")])
def test_forget_command_during_live_folding(broker: TansuBroker, topics: Topics,
                                            single: RedisServer, cluster: RedisCluster,
                                            where: str, path: str, tmp_path: Path) -> None:
    """A worker folds a stream while `python -m stream forget --from-file` erases users
    whose events all came before; then those users send new events. The figures equal
    the oracle's over everything, the forgotten users' earlier events left out."""
    url = single.url if where == "single" else cluster.url
    client = connect(url, cluster=where == "cluster")
    client.flushall()
    data = ds.generate_stable(size=3000, seed=61)
    msgs = topics.rename(data.messages)
    types = users_of(data.values(), data.now)
    pick = sorted(u for u, t in types.items() if "activity" in t)[::7][:25]
    chosen = set(pick)
    mine = [m for m in msgs if _user(m[2]) in chosen]
    rest = [m for m in msgs if _user(m[2]) not in chosen]
    env = {**worker_env(broker.bootstrap, url), **topics.env(),
           "STREAM_USER_ID_KEY": KEY, "STREAM_USER_BUCKETS": str(BUCKETS),
           "STREAM_REDIS_CLUSTER": "true" if where == "cluster" else "false", **path_env(path)}
    now_ms = ms(data.now)
    later = [(topics.inputs[0], u.encode(), json.dumps(
        {"event_id": f"live-{n}", "type": t, "user_id": u, "ts": now_ms - 120_000}).encode())
        for n, u in enumerate(pick[:10]) for t in ("activity", "signup")]
    with WorkerProcess(env) as w:
        asyncio.run(produce(broker.bootstrap, mine + rest[:300]))
        wait_until(lambda: _folded(env) >= len(mine) + 300, 90, "first part folded")
        asyncio.run(produce(broker.bootstrap, rest[300:]))
        ids = tmp_path / "forget-ids.txt"
        ids.write_text("\n".join(pick) + "\n\n")
        out = subprocess.run([sys.executable, "-m", "stream", "forget", "--from-file",
                              str(ids)], env=env, capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        erased = int(out.stdout.split()[0])
        wait_until(lambda: _folded(env) >= len(msgs), 120, "everything folded")
        asyncio.run(produce(broker.bootstrap, later))
        wait_until(lambda: _folded(env) >= len(msgs) + len(later), 60, "later events")
        _, exported = w.get("/metrics")
        assert "engagement_users_forgotten_total" in exported
        assert w.stop() == 0, w.log()[-3000:]
        # the worker's cached numbers were refused once forget had run
        assert "erased from shard" in w.log(), w.log()[-3000:]
        assert (PURE_PATH_LINE in w.log()) is (path == "pure")
    values = [v for _, _, v in mine + rest[:300]] + [v for _, _, v in rest[300:]]
    values += [v for _, _, v in later]
    order_before = len(mine) + len(rest)
    forgotten = dict.fromkeys(pick, order_before)
    exact, kept = expected(values, data.now, forgotten)
    assert erased == exact["users_forgotten_total"]
    got = report_json(env)
    assert_figures({k: v for k, v in got.items() if k not in SCAN},
                   {k: v for k, v in exact.items() if k not in SCAN}, kept)
    dump = blob(redis_dump(client))
    assert found(user_ids(values), dump) == set()
    # the key is in no log line, metric, report, dead letter or Redis value
    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter))
    assert dead
    for text in (w.log(), exported, json.dumps(got), out.stdout + out.stderr):
        assert KEY not in text
    for d in dead:
        assert KEY.encode() not in b"".join([d.value or b"", *d.headers.values()])
    assert KEY.encode() not in dump
    client.close()


def _folded(env: dict[str, str]) -> int:
    try:
        figs = report_json(env)
    except subprocess.CalledProcessError:
        return 0
    return int(sum(figs["events_total"].values()) + sum(figs["dead_letter_total"].values()))


def _user(value: bytes | None) -> str | None:
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return None
    uid = obj.get("user_id") if isinstance(obj, dict) else None
    return uid if isinstance(uid, str) else None


@pytest.mark.parametrize("kind", ["signup", "cancellation"])
def test_a_repeated_event_id_leaves_no_trace_of_its_user(kind: str,
                                                         single: RedisServer) -> None:
    """An event whose id repeats one folded in an earlier batch changes nothing (contract
    section 1), so the store must not keep even its user's number: forget then has
    nothing to erase for that user. Without a key, so the id itself is searched for."""
    store = make_store(connect(single.url, cluster=False), 1, key=None)
    now = datetime.now(oracle.UTC)
    feeder = Feeder(store, now)
    ts = ms(now) - 3 * 86_400_000
    first = {"event_id": "dup-1", "type": "signup", "user_id": "first-user", "ts": ts}
    repeat = {**first, "type": kind, "user_id": "repeat-user-x7", "ts": ts + 1000}
    feeder.apply_values([(json.dumps(first).encode(), None)])
    feeder.apply_values([(json.dumps(repeat).encode(), None)])
    data = blob(redis_dump(store.client))
    assert found({"first-user"}, data) == {"first-user"}  # the scan finds a stored id
    assert found({"repeat-user-x7"}, data) == set()
    assert forget(store, ["repeat-user-x7"], feeder.today) == 0
    store.close()

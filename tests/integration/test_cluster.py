"""Redis Cluster mode: the store on a real three-master cluster, then workers end to end.

Store level (fast, no Kafka): a generated dataset is folded into a cluster store (16
hash-tag shards) and into a single-Redis store (one shard) batch by batch; every figure
must be the same in both, exact figures must equal the brute-force oracle's, every master
must hold a real share of the keys and run a real share of the atomic batch writes, and
redeliveries, crashes between the claim and apply phases and a script cache lost by the
servers must change nothing.

End to end (slow): three `python -m stream worker` processes sharing the partitions over
the cluster must report exactly what one worker over one redis-server reports on the same
messages.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stream.decode import Message
from stream.demo.localservers import RedisCluster, RedisServer, TansuBroker
from stream.fold import fold
from stream.keys import KeySpace
from stream.store.store import Conflict, Store, StoreParams, connect
from tests.support import dataset as ds
from tests.support import oracle
from tests.support.direct import store_context
from tests.support.feeder import Feeder
from tests.support.kafka import Topics, highwaters, produce
from tests.support.workers import WorkerProcess, folded_total, report_json, wait_until, worker_env

SHARDS = 16
BUCKETS = 16384


def assert_exact_figures_match_oracle(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Every figure of the oracle equal (floats to 1e-9), unique counts within
    HyperLogLog error. The report may hold more figures than the contract's."""
    assert set(want) <= set(got), set(want) - set(got)
    for name, value in want.items():
        if name in oracle.UNIQUE:
            assert got[name] == pytest.approx(value, rel=0.03), name
        elif isinstance(value, dict):
            assert got[name] == pytest.approx(value, abs=1e-9), name
        else:
            assert got[name] == pytest.approx(value, abs=1e-9), name


def figures_only(report: dict[str, Any]) -> dict[str, Any]:
    """`report --json` without bookkeeping such as when a figure was computed."""
    return {k: v for k, v in report.items() if "timestamp" not in k}


def keys_per_master(cluster: RedisCluster) -> dict[int, list[str]]:
    """Every key, by the master (node port) that holds it."""
    out: dict[int, list[str]] = {}
    for node in cluster.nodes:
        client = redis.Redis(host=node.host, port=node.port)
        try:
            out[node.port] = [k.decode() for k in client.scan_iter(count=1000)]
        finally:
            client.close()
    return out


def evalsha_calls(cluster: RedisCluster) -> dict[int, int]:
    """EVALSHA calls served so far, by master."""
    out = {}
    for node in cluster.nodes:
        client = redis.Redis(host=node.host, port=node.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        out[node.port] = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return out


def assert_spread(cluster: RedisCluster, min_share: float = 0.2) -> None:
    """Every master holds a real share of the per-user keys and ran a real share of the
    atomic batch writes (one EVALSHA per shard and batch)."""
    per_master = keys_per_master(cluster)
    exact = {port: [k for k in keys if ":{h}:" not in k] for port, keys in per_master.items()}
    total = sum(len(v) for v in exact.values())
    assert total > 0
    for port, keys in exact.items():
        assert len(keys) >= min_share * total, (port, {p: len(v) for p, v in exact.items()})
    # The unique-count keys all share one slot (one multi-key PFCOUNT per window).
    hll_nodes = {port for port, keys in per_master.items() if any(":{h}:" in k for k in keys)}
    assert len(hll_nodes) == 1
    calls = evalsha_calls(cluster)
    for n in calls.values():
        assert n >= min_share * sum(calls.values()), calls


# -- store level ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


@pytest.fixture(scope="module")
def single() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


def cluster_store(c: RedisCluster) -> Store:
    client = connect(c.url, cluster=True)
    client.flushall()
    client.script_flush()
    keys = KeySpace(shards=SHARDS, buckets=BUCKETS // SHARDS)
    store = Store(client, keys, StoreParams("UTC", SHARDS, BUCKETS))
    store.load_scripts()
    store.check_meta()
    return store


def single_store(s: RedisServer) -> Store:
    client = connect(s.url, cluster=False)
    client.flushall()
    store = Store(client, KeySpace(shards=1, buckets=BUCKETS), StoreParams("UTC", 1, BUCKETS))
    store.load_scripts()
    store.check_meta()
    return store


def test_cluster_store_equals_single_redis_and_oracle(cluster: RedisCluster,
                                                      single: RedisServer) -> None:
    data = ds.generate_stable(size=8000, seed=3)
    want = oracle.compute_figures(data.values(), data.now)
    on_cluster = Feeder(cluster_store(cluster), data.now)
    on_single = Feeder(single_store(single), data.now)
    msgs = on_cluster.messages(data)
    for i in range(0, len(msgs), 700):
        on_cluster.apply(msgs[i:i + 700])
        on_single.apply(msgs[i:i + 700])
    got = on_cluster.figures()
    # Same members in the same {h} keys: even the HyperLogLog estimates are identical.
    assert got == on_single.figures()
    assert_exact_figures_match_oracle(got, want)
    # signup cohorts of every N and late events of every age are among them
    assert set(got["cohort_users"]) == {"1", "7", "14", "30"}
    assert all(got["late_events_total"].values())
    assert_spread(cluster)


def test_cluster_redelivery_and_crash_between_phases_change_nothing(
        cluster: RedisCluster) -> None:
    data = ds.generate_stable(size=3000, seed=5)
    want = oracle.compute_figures(data.values(), data.now)
    feeder = Feeder(cluster_store(cluster), data.now)
    store = feeder.store
    msgs = feeder.messages(data)
    batches = [msgs[i:i + 400] for i in range(0, len(msgs), 400)]
    for n, batch in enumerate(batches):
        before = dict(feeder.applied)
        if n % 3 == 1:
            # A worker that crashed after phase 1 (claims of ids living in other shards)
            # but before phase 2: the redelivery must still apply every event once.
            writes = fold(batch, store_context(store, feeder.days, feeder.today, before))
            look, ws, wl, xs, xl = store.keys.id_generations(feeder.today)
            store._claim_elsewhere(writes, {"il": look, "ws": ws, "wl": wl, "xs": xs,
                                            "xl": xl})
        feeder.apply(batch)
        if n % 2 == 0:
            # A redelivery by a worker that did not know the batch was applied: refused
            # by the offsets' compare-and-set, nothing written.
            with pytest.raises(Conflict):
                feeder.apply(batch, applied=before)
            # ...and re-read from the stored offsets: every message is skipped.
            stored = store.load_offsets({m.src for m in batch})
            writes = fold(batch, store_context(store, feeder.days, feeder.today, stored))
            assert writes.folded == 0 and not writes.dead
    assert_exact_figures_match_oracle(feeder.figures(), want)


def test_cluster_partial_batch_is_completed_by_redelivery(cluster: RedisCluster) -> None:
    """A batch that reached only some shards (a crash between their calls) is finished by
    the redelivery, which the shards that have it skip by their own offsets; the
    partition resumes at the lowest offset over the shards."""
    data = ds.generate_stable(size=2000, seed=7)
    want = oracle.compute_figures(data.values(), data.now)
    feeder = Feeder(cluster_store(cluster), data.now)
    store = feeder.store
    msgs = [Message("t/0", i, m.item, m.value) for i, m in enumerate(feeder.messages(data))]
    half = len(msgs) // 2
    feeder.apply(msgs[:half])
    # The second half lands in the even shards only: the odd ones are given a wrong
    # expected offset, so their compare-and-set refuses the batch.
    skewed = dict(feeder.applied)
    for s in range(1, SHARDS, 2):
        skewed[("t/0", s)] = -2
    writes = fold(msgs[half:], store_context(store, feeder.days, feeder.today, skewed))
    with pytest.raises(Conflict):
        store.apply(writes, skewed, feeder.today)
    stored = store.load_offsets(["t/0"])
    assert {stored[("t/0", s)] for s in range(0, SHARDS, 2)} == {len(msgs) - 1}
    assert store.resume_offset(stored, "t/0") == half
    # The redelivery from the resume point, folded against the stored per-shard offsets.
    writes = fold(msgs[half:], store_context(store, feeder.days, feeder.today, stored))
    store.apply(writes, stored, feeder.today)
    assert store.resume_offset(store.load_offsets(["t/0"]), "t/0") == len(msgs)
    assert_exact_figures_match_oracle(feeder.figures(), want)


def test_cluster_batch_retried_after_a_transient_error_applies_once(
        cluster: RedisCluster) -> None:
    """The worker retries `Store.apply` with the same writes when Redis fails mid-batch;
    phase 1 has already marked the batch's claims as done by then."""
    data = ds.generate_stable(size=1500, seed=13)
    want = oracle.compute_figures(data.values(), data.now)
    feeder = Feeder(cluster_store(cluster), data.now)
    store = feeder.store
    msgs = feeder.messages(data)
    writes = fold(msgs, store_context(store, feeder.days, feeder.today, {}))
    real_execute = store._execute
    calls = 0

    def fail_second_pipeline(pipe: Any) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 2:  # phase 1 went through; phase 2 never reached Redis
            raise redis.exceptions.ConnectionError("connection reset")
        return real_execute(pipe)

    store._execute = fail_second_pipeline  # type: ignore[method-assign]
    with pytest.raises(redis.exceptions.ConnectionError):
        store.apply(writes, {}, feeder.today)
    store.apply(writes, {}, feeder.today)
    assert_exact_figures_match_oracle(feeder.figures(), want)


def test_cluster_lost_script_cache_is_reloaded(cluster: RedisCluster) -> None:
    data = ds.generate_stable(size=1500, seed=9)
    want = oracle.compute_figures(data.values(), data.now)
    feeder = Feeder(cluster_store(cluster), data.now)
    msgs = feeder.messages(data)
    half = len(msgs) // 2
    feeder.apply(msgs[:half])
    # A restarted or failed-over primary has no scripts: NOSCRIPT, reload, resend.
    feeder.store.client.script_flush()
    feeder.apply(msgs[half:])
    assert_exact_figures_match_oracle(feeder.figures(), want)


# -- end to end -------------------------------------------------------------------------


@pytest.mark.slow
def test_three_workers_on_cluster_equal_one_worker_on_one_redis(
        broker: TansuBroker, redis_cluster: RedisCluster, redis_server: RedisServer,
        topics: Topics) -> None:
    data = ds.generate_stable(size=20_000, seed=11)
    messages = topics.rename(data.messages)
    want = oracle.compute_figures(data.values(), data.now)
    asyncio.run(produce(broker.bootstrap, messages))

    single_env = worker_env(broker.bootstrap, redis_server.url,
                            {**topics.env(), "STREAM_CONSUMER_GROUP": topics.group + "-one"})
    cluster_env = worker_env(broker.bootstrap, redis_cluster.url,
                             {**topics.env(), "STREAM_REDIS_CLUSTER": "true",
                              "STREAM_CONSUMER_GROUP": topics.group + "-cluster",
                              "STREAM_BATCH_MAX": "500"})
    workers = [WorkerProcess(single_env)] + [WorkerProcess(cluster_env) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        for env in (single_env, cluster_env):
            wait_until(lambda env=env: folded_total(report_json(env)) >= len(messages), 150,
                       "every message folded", interval=1.0)
        single_figures = report_json(single_env)
        cluster_figures = report_json(cluster_env)
        # Each of the three cluster workers folded a share of the partitions.
        for w in workers[1:]:
            processed = sum(v for (name, _), v in w.metrics().items()
                            if name == "engagement_messages_processed_total")
            assert processed > 0, w.log()[-3000:]
        for w in workers:
            assert w.stop() == 0, w.log()[-3000:]
    finally:
        for w in workers:
            w.stop()
    in_topics = sum(sum(asyncio.run(highwaters(broker.bootstrap, t)).values())
                    for t in topics.inputs)
    assert in_topics == len(messages), "the broker holds more than was produced"
    # The topology first (cluster and 3 workers against one Redis and 1 worker), then the
    # ground truth.
    assert figures_only(cluster_figures) == figures_only(single_figures)
    assert cluster_figures["events_total"] == want["events_total"]
    assert cluster_figures["dead_letter_total"] == data.expected_dead_letters
    assert folded_total(cluster_figures) == len(messages)
    assert_exact_figures_match_oracle(cluster_figures, want)
    assert cluster_figures["dead_letter_total"] == data.expected_dead_letters
    assert_spread(redis_cluster)


def test_running_store_moves_to_a_cluster_with_redis_cli_import(cluster: RedisCluster,
                                                                 single: RedisServer) -> None:
    """docs/scaling.md, moving a store as it is: fold half the stream into one Redis, copy
    every key into the cluster with `redis-cli --cluster import`, go on on the cluster
    with the same layout (STREAM_REDIS_SHARDS=1): nothing lost or doubled, the offsets
    moved with the data."""
    data = ds.generate_stable(size=3000, seed=17)
    want = oracle.compute_figures(data.values(), data.now)
    before = Feeder(single_store(single), data.now)
    msgs = before.messages(data)
    half = len(msgs) // 2
    for i in range(0, half, 500):
        before.apply(msgs[i:min(i + 500, half)])
    target = connect(cluster.url, cluster=True)
    target.flushall()
    out = subprocess.run(
        ["redis-cli", "--cluster", "import", f"{cluster.host}:{cluster.nodes[0].port}",
         "--cluster-from", f"{single.host}:{single.port}", "--cluster-copy"],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    after = Store(target, KeySpace(shards=1, buckets=BUCKETS), StoreParams("UTC", 1, BUCKETS))
    after.load_scripts()
    after.check_meta()
    feeder = Feeder(after, data.now)
    srcs = {m.src for m in msgs}
    feeder.applied = after.load_offsets(srcs)
    resumed = {src: after.resume_offset(feeder.applied, src) for src in srcs}
    rest = [m for m in msgs if resumed[m.src] is None or m.offset >= resumed[m.src]]
    assert len(rest) == len(msgs) - half
    for i in range(0, len(rest), 500):
        feeder.apply(rest[i:i + 500])
    assert_exact_figures_match_oracle(feeder.figures(), want)

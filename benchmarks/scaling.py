"""Scale-out benchmark: 1 versus 3 workers over Redis Cluster, on the same events.

    python -m benchmarks.scaling                    # ~150k events, a few minutes
    python -m benchmarks.scaling --events 50000     # a quick run
    python -m benchmarks.scaling --no-docs          # print only

It starts a private Tansu broker, a three-master Redis Cluster and a redis-server on free
loopback ports, produces a realistic event history (every event type, props) once to the
four input topics, then runs `python -m stream worker` processes on it, each run with a
fresh consumer group and an emptied store:

- cluster, 1 worker and cluster, 3 workers: the scaling figures;
- one redis-server, 1 worker: the reference, and Redis memory per monthly active user;
- one redis-server, 1 worker with STREAM_SEGMENTS=plan,platform: memory per segment value.

What is measured, per run, from the moment each worker has its partitions (its /readyz
answers 200) until every message is folded (the totals in Redis add up to the number
produced):

- worker CPU: user + system seconds of the worker processes (psutil), summed;
- Redis CPU: `used_cpu_user + used_cpu_sys` of every Redis node (INFO cpu), delta.

On a machine with few cores, wall-clock speed-up says little (the workers, the broker
and Redis share the cores); CPU per event does: scaling out costs nothing if the events
folded per worker CPU-second and the Redis CPU per event stay the same with 3 workers.
Results are printed and written between the markers in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from stream.demo.localservers import RedisCluster, RedisServer, TansuBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "scaling.md"
BEGIN = "<!-- scaling-benchmark:begin -->"
END = "<!-- scaling-benchmark:end -->"
SHARDS = 16
PREFIX = "es"


# -- data ----------------------------------------------------------------------------------


def history(events: int, seed: int = 3) -> tuple[list[tuple[str, bytes, bytes]], int]:
    """About `events` realistic events over 40 days (the demo's event model), as
    (topic, key, value); and the number of distinct users active in the last 30 days."""
    import msgspec

    from stream.demo.generator import EventModel, topic_for

    now = datetime.now(UTC)
    users = max(100, events // 28)  # ~0.67 events per user and day, 40 days, + baseline
    enc = msgspec.json.Encoder().encode
    out = []
    mau: set[str] = set()
    month_ago = now.timestamp() * 1000 - 29 * 86_400_000
    for event in EventModel(users, seed=seed, plain_ts=True).history(now, days=40):
        out.append((topic_for(event["type"]), str(event["user_id"]).encode(), enc(event)))
        if event["type"] == "activity":
            ts = event["ts"]
            ms = ts if isinstance(ts, int) else datetime.fromisoformat(
                ts.replace("Z", "+00:00")).timestamp() * 1000
            if ms >= month_ago - month_ago % 86_400_000:
                mau.add(event["user_id"])
    return out, len(mau)


async def _produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    from stream.demo.producer import make_producer

    producer = make_producer(bootstrap)
    await producer.start()
    try:
        pending = []
        for topic, key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 4000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# -- Redis ---------------------------------------------------------------------------------


@dataclass
class Store:
    """The Redis of a run: every node (one, or the cluster's masters) and a worker URL."""

    url: str
    cluster: bool
    nodes: list[tuple[str, int]]

    def clients(self) -> list[redis.Redis]:
        return [redis.Redis(host=h, port=p) for h, p in self.nodes]

    def flush(self) -> None:
        for c in self.clients():
            c.flushall(asynchronous=False)
            c.close()

    def cpu(self) -> float:
        total = 0.0
        for c in self.clients():
            info = c.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            c.close()
        return total

    def memory(self) -> int:
        total = 0
        for c in self.clients():
            total += int(c.info("memory")["used_memory"])
            c.close()
        return total

    def folded(self) -> int:
        """Messages accounted for in Redis: events plus dead letters, over the shards."""
        shards = SHARDS if self.cluster else 1
        total = 0
        for c in self.clients():
            for s in range(shards):
                # only the node that holds the key answers with values
                try:
                    values = c.hvals(f"{PREFIX}:{{{PREFIX}{s}}}:tot")
                except redis.exceptions.ResponseError:  # MOVED: another master's shard
                    continue
                total += sum(int(v) for v in values)
            c.close()
        return total


# -- workers -------------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    ready_cpu: float | None = None

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return int(r.status) == 200
        except (urllib.error.URLError, OSError):
            return False


def start_worker(bootstrap: str, store: Store, group: str, extra: dict[str, str]) -> Worker:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update({
        "STREAM_KAFKA_BROKERS": bootstrap,
        "STREAM_REDIS_URL": store.url,
        "STREAM_REDIS_CLUSTER": "true" if store.cluster else "false",
        "STREAM_CONSUMER_GROUP": group,
        "STREAM_METRICS_HOST": "127.0.0.1",
        "STREAM_METRICS_PORT": str(port),
        "STREAM_SESSION_TIMEOUT_MS": "6000",
        "STREAM_HEARTBEAT_INTERVAL_MS": "1000",
        "STREAM_LOG_LEVEL": "WARNING",
        **extra,
    })
    proc = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Worker(proc, port)


@dataclass
class Result:
    name: str
    workers: int
    events: int
    seconds: float
    worker_cpu: float
    redis_cpu: float
    memory: int
    per_worker_cpu: list[float] = field(default_factory=list)

    @property
    def per_worker_cpu_second(self) -> float:
        return self.events / self.worker_cpu

    @property
    def redis_us_per_event(self) -> float:
        return self.redis_cpu / self.events * 1e6


def run(name: str, bootstrap: str, store: Store, n: int, total: int,
        extra: dict[str, str] | None = None, timeout: float = 600) -> Result:
    store.flush()
    time.sleep(0.5)
    base_memory = store.memory()
    redis_before = store.cpu()
    group = f"scaling-{name}-{n}-{time.time_ns()}"
    workers = [start_worker(bootstrap, store, group, extra or {}) for _ in range(n)]
    started = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            for w in workers:
                if w.ready_cpu is None and w.ready():
                    w.ready_cpu = w.cpu()
                    started = started or time.monotonic()
                if w.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {w.proc.returncode}")
            if all(w.ready_cpu is not None for w in workers):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("workers not ready")
            time.sleep(0.01)  # /readyz is only asked before a worker is ready
        while store.folded() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{store.folded()} of {total} folded")
            time.sleep(0.2)
        done = time.monotonic()
        cpu = [w.cpu() - (w.ready_cpu or 0.0) for w in workers]
        redis_cpu = store.cpu() - redis_before
    finally:
        for w in workers:
            w.proc.terminate()
        for w in workers:
            try:
                w.proc.wait(20)
            except subprocess.TimeoutExpired:
                w.proc.kill()
    assert started is not None
    time.sleep(0.5)
    memory = store.memory() - base_memory  # without the workers' connection buffers
    folded = store.folded()
    if folded != total:
        raise AssertionError(f"{folded} folded, {total} produced")
    return Result(name, n, total, done - started, sum(cpu), redis_cpu, memory, cpu)


def pooled(a: Result, b: Result) -> Result:
    """Two runs of one configuration as one: events, seconds and CPU added up."""
    return Result(a.name, a.workers, a.events + b.events, a.seconds + b.seconds,
                  a.worker_cpu + b.worker_cpu, a.redis_cpu + b.redis_cpu, b.memory,
                  [x + y for x, y in zip(a.per_worker_cpu, b.per_worker_cpu, strict=True)])


# -- report --------------------------------------------------------------------------------


def summary(results: dict[str, Result], mau: int) -> dict[str, Any]:
    one, three = results["cluster-1"], results["cluster-3"]
    out: dict[str, Any] = {
        "events": one.events,
        "monthly_active_users": mau,
        "cpus": os.cpu_count(),
        "runs": {k: {"workers": r.workers, "seconds": round(r.seconds, 2),
                     "worker_cpu_seconds": round(r.worker_cpu, 2),
                     "per_worker_cpu_seconds": [round(c, 2) for c in r.per_worker_cpu],
                     "events_per_worker_cpu_second": round(r.per_worker_cpu_second),
                     "redis_cpu_seconds": round(r.redis_cpu, 2),
                     "redis_cpu_us_per_event": round(r.redis_us_per_event, 2),
                     "redis_memory_bytes": r.memory}
                 for k, r in results.items()},
        "worker_cpu_efficiency_3_vs_1": round(three.per_worker_cpu_second
                                              / one.per_worker_cpu_second, 3),
        "redis_cpu_per_event_3_vs_1": round(three.redis_us_per_event
                                            / one.redis_us_per_event, 3),
        "memory_bytes_per_mau_cluster": round(one.memory / mau),
    }
    if "single-1" in results:
        out["memory_bytes_per_mau_single"] = round(results["single-1"].memory / mau)
    if "segments-1" in results and "single-1" in results:
        extra = results["segments-1"].memory - results["single-1"].memory
        out["segment_values"] = SEGMENT_VALUES
        out["memory_bytes_per_segment_value"] = round(extra / SEGMENT_VALUES)
    return out


#: plan (free, pro, team, enterprise...) and platform (web, ios, android, desktop) values
#: of the demo's event model, counted after the run (see `main`).
SEGMENT_VALUES = 0


def markdown(s: dict[str, Any]) -> str:
    rows = ["| run | workers | wall s | worker CPU s | events / worker CPU s "
            "| Redis CPU µs / event | Redis memory MiB |",
            "|---|---|---|---|---|---|---|"]
    for name, r in s["runs"].items():
        rows.append(f"| {name} | {r['workers']} | {r['seconds']} | {r['worker_cpu_seconds']} "
                    f"| {r['events_per_worker_cpu_second']} | {r['redis_cpu_us_per_event']} "
                    f"| {r['redis_memory_bytes'] / 2**20:.1f} |")
    lines = [
        f"Measured by `python -m benchmarks.scaling` on {s['events']} events "
        f"({s['monthly_active_users']} monthly active users; the cluster rows pool "
        f"{len(s['per_repeat_3_vs_1'])} alternated runs each), {s['cpus']} CPU cores, "
        f"{datetime.now(UTC).date().isoformat()}:",
        "",
        *rows,
        "",
        f"- events folded per worker CPU-second, 3 workers / 1 worker: "
        f"**{s['worker_cpu_efficiency_3_vs_1']:.2f}** (target: at least 0.90)",
        f"- Redis CPU per event, 3 workers / 1 worker: "
        f"**{s['redis_cpu_per_event_3_vs_1']:.2f}** (target: no growth, 1 within the "
        f"noise of the measurement)",
        "- each pair of runs on its own (efficiency, Redis CPU ratio): "
        + ", ".join(f"({a:.2f}, {b:.2f})" for a, b in s["per_repeat_3_vs_1"]),
        f"- Redis memory per monthly active user: {s['memory_bytes_per_mau_cluster']} bytes "
        f"on the cluster (16 shards)"
        + (f", {s['memory_bytes_per_mau_single']} bytes on one Redis"
           if "memory_bytes_per_mau_single" in s else ""),
    ]
    if "memory_bytes_per_segment_value" in s:
        lines.append(f"- Redis memory per segment value (`STREAM_SEGMENTS=plan,platform`, "
                     f"{s['segment_values']} values): "
                     f"{s['memory_bytes_per_segment_value'] / 1024:.0f} KiB")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    global SEGMENT_VALUES
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=150_000, help="events (default 150000)")
    p.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    p.add_argument("--repeat", type=int, default=3,
                   help="1- and 3-worker cluster runs, alternated (default 3); CPU is pooled")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/scaling.md")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the single-Redis and segment runs")
    args = p.parse_args()

    print("generating events...", flush=True)
    messages, mau = history(args.events)
    total = len(messages)
    values: dict[str, set[str]] = {"plan": set(), "platform": set()}
    for _, _, v in messages:
        props = json.loads(v).get("props") or {}
        for dim in values:
            if dim in props:
                values[dim].add(props[dim])
    SEGMENT_VALUES = sum(len(v) for v in values.values())
    with TansuBroker() as broker, RedisCluster() as rc, RedisServer() as rs:
        from stream.demo.generator import TOPICS

        broker.create_topics(list(TOPICS), args.partitions)
        print(f"producing {total} events...", flush=True)
        asyncio.run(_produce(broker.bootstrap, messages))
        cluster = Store(rc.url, True, rc.startup_nodes)
        single = Store(rs.url, False, [(rs.host, rs.port)])
        plan: list[tuple[str, Store, int, dict[str, str]]] = [
            (name, cluster, n, {}) for _ in range(args.repeat)
            for name, n in (("cluster-1", 1), ("cluster-3", 3))]
        if not args.no_memory:
            plan += [("single-1", single, 1, {}),
                     ("segments-1", single, 1, {"STREAM_SEGMENTS": "plan,platform"})]
        results: dict[str, Result] = {}
        ratios: list[tuple[float, float]] = []
        one: Result | None = None
        for name, store, n, extra in plan:
            print(f"run {name}...", flush=True)
            r = run(name, broker.bootstrap, store, n, total, extra)
            if name == "cluster-1":
                one = r
            elif name == "cluster-3" and one is not None:
                ratios.append((r.per_worker_cpu_second / one.per_worker_cpu_second,
                               r.redis_us_per_event / one.redis_us_per_event))
            results[name] = pooled(results[name], r) if name in results else r
            print(f"  {r.seconds:.1f} s, worker CPU {r.worker_cpu:.2f} s "
                  f"({r.per_worker_cpu_second:.0f} events/CPU s), Redis CPU "
                  f"{r.redis_us_per_event:.2f} µs/event", flush=True)
    s = summary(results, mau)
    s["events"] = total
    s["per_repeat_3_vs_1"] = [[round(a, 3), round(b, 3)] for a, b in ratios]
    print(json.dumps(s, indent=2))
    text = markdown(s)
    print(text)
    if not args.no_docs:
        write_doc(text)
        print(f"written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""The cost of a figure read with many campaign names: a hostile stream's distinct
campaigns folded by the worker's own fold and store into a private redis-server, then
the figures read as `/metrics` and `report` read them, against what reading every
campaign's per-day counters (the read before the rolling windows) costs.

    python -m benchmarks.campaigns                        # 100k campaigns over 30 days
    python -m benchmarks.campaigns --campaigns 10000

Prints, for each: wall time, Redis CPU and the campaign fields that cross the wire; then
the cost of moving the windows a day (the first read after midnight), of building them
afresh, and Redis memory of the windows.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import redis

from stream import campaigns, figures
from stream.decode import Message
from stream.demo.localservers import RedisServer
from stream.events import decode
from stream.fold import FoldContext, fold
from stream.keys import KeySpace
from stream.store.store import Store, StoreParams
from stream.timebuckets import DayMapper, ms, utc_now

BATCH = 10_000
LATENESS_MS = 400 * 86_400_000


def _redis_cpu(client: redis.Redis) -> float:
    """Redis's own CPU seconds so far (benchmarks.run's, without its extra's imports)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _timed(client: redis.Redis, fn: Any) -> tuple[Any, float, float, float]:
    """fn's result, wall seconds, Redis CPU seconds and Redis's longest command (s)."""
    client.slowlog_reset()
    cpu0, t0 = _redis_cpu(client), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, _redis_cpu(client) - cpu0
    longest = max((e["duration"] for e in client.slowlog_get(1000)), default=0) / 1e6
    return out, wall, cpu, longest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--campaigns", type=int, default=100_000, help="distinct names (100k)")
    p.add_argument("--days", type=int, default=30, help="days their visits span (30)")
    args = p.parse_args()
    now = utc_now()
    now_ms = ms(now)
    days = DayMapper("UTC")
    today = days.today(now)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("slowlog-log-slower-than", 0)  # every command, for the longest
        client.config_set("slowlog-max-len", 1000)
        keys = KeySpace(shards=1, buckets=4096)
        store = Store(client, keys, StoreParams("UTC", 1, 4096))
        store.load_scripts()
        store.check_meta()
        store.read(today)  # the windows start empty; every batch below adds to them
        applied: dict[tuple[str, int], int] = {}
        for start in range(0, args.campaigns, BATCH):
            batch = []
            for i in range(start, min(start + BATCH, args.campaigns)):
                ts = now_ms - (i % args.days) * 86_400_000 - 1000
                value = json.dumps({"event_id": f"v{i}", "type": "visit", "user_id": f"u{i}",
                                    "ts": ts, "campaign": f"campaign-{i:08d}-" + "x" * 40})
                batch.append(Message("t/0", i, decode(value.encode(), now_ms, LATENESS_MS)))
            writes = fold(batch, FoldContext(keys, days, today, applied))
            store.apply(writes, applied, today)
            applied[("t/0", 0)] = batch[-1].offset

        def full() -> dict[str, float]:
            visits: dict[str, int] = {}
            pipe = client.pipeline(transaction=False)
            for d in range(today - 30, today + 1):
                pipe.hgetall(keys.counters(0, d))
            for h in pipe.execute():
                for f, v in h.items():
                    if f.startswith(b"v:"):
                        name = f[2:].decode()
                        visits[name] = visits.get(name, 0) + int(v)
            return campaigns.ratios(visits, {}, store.campaign_max_series)

        def read(day: int) -> Any:
            raw = store.read(day, previous=True)
            return figures.compute(raw), len(raw.window_counters)

        print(f"{args.campaigns} campaigns over {args.days} days, "
              f"max series {store.campaign_max_series}")
        def show(what: str, wall: float, cpu: float, longest: float, note: str) -> None:
            print(f"  {what:<24} {wall * 1000:8.1f} ms wall, {cpu * 1000:7.1f} ms Redis CPU, "
                  f"longest call {longest * 1000:6.1f} ms; {note}")

        old, *t = _timed(client, full)
        show("every per-day counter:", *t, f"{args.campaigns} campaign fields read")
        (new, fields), *t = _timed(client, lambda: read(today))
        assert new["conversion_ratio"] == old
        show("rolling windows (read):", *t, f"{fields} window fields read")
        _, *t = _timed(client, lambda: read(today + 1))
        show("windows moved a day:", *t, "once a day")
        client.delete(keys.tag(0) + "cw:0")
        _, *t = _timed(client, lambda: read(today + 1))
        show("windows built afresh:", *t, "first read of a store, a day per call")
        memory = sum(int(client.memory_usage(keys.tag(0) + k) or 0)
                     for k in ("cw:0", "cw:1", "cwv:0", "cwv:1"))
        print(f"  Redis memory of the windows: {memory / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

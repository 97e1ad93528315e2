"""Redis's cost of the worker's writes, without Kafka: the benchmark's activity events
folded and applied in batches by the worker's own fold and store, into a private
redis-server; prints Redis CPU per event and Redis's time per command.

    python -m benchmarks.redis_apply                       # 1M events of 200k users
    python -m benchmarks.redis_apply --events 300000 --users 60000
    python -m benchmarks.redis_apply --shape shuffled   # the same events' times shuffled

Batches are 10k messages, 2.5k from each of 4 partitions (keyed by user), as the worker
takes them; (user, day) pairs already written are remembered as the worker does.
"""

from __future__ import annotations

import argparse
import time
import zlib

import redis

from benchmarks.run import SHAPES, _redis_cpu, activity_events
from stream.decode import Prepared
from stream.demo.localservers import RedisServer
from stream.fold import FoldContext
from stream.keys import KeySpace
from stream.stages import fold_prepared
from stream.store.store import Store, StoreParams, connect
from stream.timebuckets import DayMapper, ms, utc_now
from stream.usermap import new_table
from stream.worker import SEEN_LIMIT

PARTITIONS = 4
PER_PARTITION = 2_500
LATENESS_MS = 400 * 86_400_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="activity events (1M)")
    p.add_argument("--users", type=int, default=200_000, help="distinct users (200k)")
    p.add_argument("--days", type=int, default=30, help="days the events span (30)")
    p.add_argument("--shape", default="ordered", choices=[s for s in SHAPES if s not in (
        "lz4", "zstd")], help="the benchmark's event shape (ordered)")
    args = p.parse_args()
    now = utc_now()
    events = activity_events(args.events, args.users, args.days, ms(now), shape=args.shape)
    parts: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for key, value in events:
        parts[zlib.crc32(key) % PARTITIONS].append(value)
    with RedisServer() as server:
        client = connect(server.url, False)  # as the worker's (its command packer)
        assert isinstance(client, redis.Redis)
        keys = KeySpace(shards=1, buckets=4096)
        store = Store(client, keys, StoreParams("UTC", 1, 4096))
        store.load_scripts()
        store.check_meta()
        days = DayMapper("UTC")
        today = days.today(now)
        applied: dict[tuple[str, int], int] = {}
        seen = new_table()  # the worker's table (compact with the compiled parts)
        places: dict[str, tuple[int, int]] = {}  # the fold's cache, as a worker's
        client.config_resetstat()
        cpu0 = _redis_cpu(client)
        fold_s = apply_s = 0.0
        fold_cpu = apply_cpu = seen_cpu = 0.0
        pos = [0] * PARTITIONS
        while any(pos[i] < len(parts[i]) for i in range(PARTITIONS)):
            values: list[bytes | None] = []
            offsets: list[int] = []
            runs: list[tuple[str, int, int]] = []
            for i in range(PARTITIONS):
                chunk = parts[i][pos[i]:pos[i] + PER_PARTITION]
                runs.append((f"t/{i}", len(values), len(values) + len(chunk)))
                offsets += range(pos[i], pos[i] + len(chunk))
                values += chunk
                pos[i] += len(chunk)
            t0, c0 = time.perf_counter(), time.process_time()
            writes = fold_prepared(Prepared(values, offsets, runs, ms(now), LATENESS_MS),
                                   FoldContext(keys, days, today, applied, seen, places=places))
            t1, c1 = time.perf_counter(), time.process_time()
            store.apply(writes, applied, today)
            apply_s += time.perf_counter() - t1
            c2 = time.process_time()
            fold_s += t1 - t0
            fold_cpu += c1 - c0
            apply_cpu += c2 - c1
            for src, last in writes.last_offset.items():
                applied[(src, 0)] = last
            # as Worker._apply: the seen cache takes the batch's pairs once applied
            if len(seen) > SEEN_LIMIT:
                seen.clear()
            seen.update(writes.new_days)
            seen_cpu += time.process_time() - c2
        cpu = _redis_cpu(client) - cpu0
        stats = client.info("commandstats")
        n = args.events
        print(f"{n:,} events of {args.users:,} users: Redis CPU {1e6 * cpu / n:.2f} us/event; "
              f"worker fold {1e6 * fold_s / n:.2f} us/event, apply call "
              f"{1e6 * apply_s / n:.2f} us/event (wall)")
        print(f"worker CPU per event: fold {1e6 * fold_cpu / n:.2f} us, apply call (its "
              f"Python, and waiting for none of Redis's time) {1e6 * apply_cpu / n:.2f} us, "
              f"seen update {1e6 * seen_cpu / n:.2f} us")
        top = sorted(stats.items(), key=lambda kv: -int(kv[1]["usec"]))[:6]
        print("Redis time per event by command: " + ", ".join(
            f"{k.removeprefix('cmdstat_')} {int(v['usec']) / n:.2f} us" for k, v in top))
        store.close()


if __name__ == "__main__":
    main()

"""What STREAM_USER_ID_KEY costs the fold: `fold_prepared` on plain activity events
without a key and with one, compiled and Python paths, in one process.

    python -m benchmarks.privacy_fold                 # 200k events, 5 rounds
    python -m benchmarks.privacy_fold --events 1000000

Batches of `--batch` consecutive values are folded four ways, alternating: compiled
without a key; compiled with a key and a warm hash cache (the users of a live stream
repeat: each id is hashed once, then looked up); compiled with a key and a cold cache
(every id of the batch hashed: a replay of many users); the Python fold with a key (what
handing those messages to Python would cost). Nanoseconds per message, best of
`--rounds` rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from stream.decode import Prepared
from stream.fold import FoldContext
from stream.keys import KeySpace
from stream.privacy import UserIdHasher
from stream.stages import compiled_fold_available, fold_prepared
from stream.timebuckets import DayMapper


def activity_events(n: int, users: int, now_ms: int) -> list[bytes]:
    """`n` activity events of `users` users over the last 30 days, in time order (the
    shape of benchmarks.run's events, without its dependencies)."""
    rng = random.Random(7)
    start = now_ms - now_ms % 86_400_000 - 29 * 86_400_000
    stamps = sorted(start + rng.randrange(now_ms - 60_000 - start) for _ in range(n))
    return [json.dumps({"event_id": f"a{i}", "type": "activity",
                        "user_id": f"user-{rng.randrange(users):07d}", "ts": ts},
                       separators=(",", ":")).encode() for i, ts in enumerate(stamps)]

KEY = "benchmark-user-id-key-0123456789"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events generated (200k)")
    p.add_argument("--users", type=int, default=50_000, help="distinct users (50k)")
    p.add_argument("--batch", type=int, default=10_000, help="values per batch (10k)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (5)")
    args = p.parse_args()
    if not compiled_fold_available():
        raise SystemExit("the compiled fold is not built (setup.py build_ext --inplace)")

    now_ms = 1_795_348_800_000
    values: list[bytes | None] = list(activity_events(args.events, args.users, now_ms))
    batches = [values[i:i + args.batch] for i in range(0, len(values), args.batch)]
    days = DayMapper("UTC")
    today = now_ms // 86_400_000
    keys = KeySpace(shards=1, buckets=16384)
    warm = UserIdHasher(KEY)
    places: dict[str, tuple[int, int]] = {}  # kept across batches, as a worker keeps it

    def fold_all(hasher: UserIdHasher | None, compiled: bool,
                 before: Callable[[], None]) -> int:
        spent = 0
        for b in batches:
            batch = Prepared(b, list(range(len(b))), [("t/0", 0, len(b))], now_ms,
                             400 * 86_400_000)
            before()
            start = time.perf_counter_ns()
            fold_prepared(batch, FoldContext(keys, days, today, {}, {}, user_ids=hasher,
                                             places=places), compiled=compiled)
            spent += time.perf_counter_ns() - start
        return spent

    def nothing() -> None:
        pass

    fold_all(warm, True, nothing)  # warms the cache with every user
    ways: dict[str, tuple[UserIdHasher | None, bool, Callable[[], None]]] = {
        "compiled, no key": (None, True, nothing),
        "compiled, key, warm cache": (warm, True, nothing),
        "compiled, key, cold cache": (warm, True, warm.cache.clear),
        "Python, key, warm cache": (warm, False, nothing),
    }
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(args.rounds):
        for name, (hasher, compiled, before) in ways.items():
            if name != "compiled, key, cold cache":
                fold_all(warm, True, nothing)  # warm again after the cold run
            best[name] = min(best[name], fold_all(hasher, compiled, before) / len(values))
    base = best["compiled, no key"]
    print(f"{len(values):,} activity events, {args.users:,} users, batches of {args.batch:,}")
    for name, ns in best.items():
        print(f"{name:28s} {ns:7.0f} ns/message  x{ns / base:.2f}")


if __name__ == "__main__":
    main()

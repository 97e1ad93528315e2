"""Per-message `decode` against `decode_batch`, on the benchmark's own activity events.

    python -m benchmarks.decode                    # 1M events generated, 10 batches timed
    python -m benchmarks.decode --batches 30

The events are those of `benchmarks.run` (same generator, users and days, so the same
mix of integer and RFC 3339 `ts` and the same event-time density per batch). Batches of
`--batch` consecutive values from the middle of the stream are decoded both ways in the
same run, alternating, each from a cold `ts` minute cache; the best of `--rounds` rounds
is reported in nanoseconds per message.
"""

from __future__ import annotations

import argparse
import time

from stream import events
from stream.events import decode, decode_batch

from .run import activity_events


def _per_message(batch: list[bytes], now_ms: int, lateness_ms: int) -> int:
    """Nanoseconds for `decode` called once per value of `batch`."""
    events._MINUTES.clear()
    start = time.perf_counter_ns()
    [decode(v, now_ms, lateness_ms) for v in batch]
    return time.perf_counter_ns() - start


def _batched(batch: list[bytes], now_ms: int, lateness_ms: int) -> int:
    """Nanoseconds for one `decode_batch` call over `batch`."""
    events._MINUTES.clear()
    start = time.perf_counter_ns()
    decode_batch(batch, now_ms, lateness_ms)
    return time.perf_counter_ns() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events generated (1M)")
    p.add_argument("--users", type=int, default=200_000, help="distinct users (200k)")
    p.add_argument("--days", type=int, default=30, help="days the events span (30)")
    p.add_argument("--batch", type=int, default=10_000, help="values per batch (10k)")
    p.add_argument("--batches", type=int, default=10, help="batches timed (10)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (5)")
    args = p.parse_args()

    # A fixed clock: the values, and so the numbers, are the same on every run.
    now_ms = 1_795_348_800_000
    lateness_ms = 400 * 86_400_000
    values = [v for _, v in activity_events(args.events, args.users, args.days, now_ms)]
    middle = max(0, len(values) // 2 - args.batch * args.batches // 2)
    batches = [values[middle + i * args.batch:middle + (i + 1) * args.batch]
               for i in range(args.batches)]
    batches = [b for b in batches if b]
    n = sum(map(len, batches))
    for b in batches:  # the two must agree before their speed means anything
        assert decode_batch(b, now_ms, lateness_ms) == [decode(v, now_ms, lateness_ms) for v in b]

    best = {"decode": float("inf"), "decode_batch": float("inf")}
    for _ in range(args.rounds):
        one = sum(_per_message(b, now_ms, lateness_ms) for b in batches)
        many = sum(_batched(b, now_ms, lateness_ms) for b in batches)
        best["decode"] = min(best["decode"], one / n)
        best["decode_batch"] = min(best["decode_batch"], many / n)
    print(f"{n:,} activity events in {len(batches)} batches of {args.batch:,}"
          f" ({sum(map(len, values[middle:middle + n])) / n:.0f} bytes each)")
    for name, ns in best.items():
        print(f"  {name:<13} {ns:7.0f} ns/message")
    print(f"  speed-up      {best['decode'] / best['decode_batch']:7.2f}x")


if __name__ == "__main__":
    main()

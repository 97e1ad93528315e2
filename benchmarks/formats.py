"""Decode + fold of Segment `track` calls against the same events in native form.

    python -m benchmarks.formats                   # 200k events, batches of 10k, 5 rounds
    python -m benchmarks.formats --events 1000000

The native events are those of `benchmarks.run` (same generator, users and days); each
is also written as the Segment `track` call a Segment, RudderStack or Jitsu pipeline
would put on Kafka for it (same `messageId`, user and time, plus the context, properties
and timestamps such a call carries). Both streams go through `fold.fold_prepared`, the
worker's decode + fold step (native with the compiled fold when it is built, the Segment
topic through the `segment` preset), batch by batch, the two shapes interleaved in the
same process so the machine's noise hits both alike; the best of `--rounds` rounds is
reported, in nanoseconds per event, with the ratio of the rates.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from stream import formats
from stream.app import _tune_gc
from stream.decode import Prepared
from stream.fold import FoldContext
from stream.keys import KeySpace
from stream.stages import compiled_fold_available, fold_prepared
from stream.timebuckets import DayMapper

from .run import activity_events

NOW_MS = 1_795_348_800_000
LATENESS_MS = 400 * 86_400_000


def segment_call(native: bytes) -> bytes:
    """The Segment `track` call of one native activity event."""
    e = msgspec.json.decode(native)
    ts = e["ts"]
    iso = ts if isinstance(ts, str) else datetime.fromtimestamp(ts / 1000, UTC).isoformat()
    call: dict[str, Any] = {
        "type": "track", "event": "Video Played", "messageId": e["event_id"],
        "userId": e["user_id"], "anonymousId": "3a12eab0-bca7-11e4-8dfc-aa07a5b093db",
        "timestamp": ts, "originalTimestamp": iso, "sentAt": iso, "receivedAt": iso,
        "properties": {"title": "Intro", "duration": 12.5, "platform": e["props"]["platform"]},
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "page": {"path": "/watch", "url": "https://example.com/watch?v=1",
                     "title": "Watch", "referrer": "https://example.com/"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0",
            "ip": "203.0.113.7", "locale": "en-US",
        },
        "integrations": {}, "version": 2,
    }
    return msgspec.json.encode(call)


class _Stream:
    """One shape's events, decoded and folded batch by batch from a fresh state."""

    def __init__(self, values: list[bytes | None], mapped: bool, compiled: bool,
                 keys: KeySpace, days: DayMapper, today: int) -> None:
        self.values, self.compiled = values, compiled
        self.fmts = {"t": formats.load("segment")} if mapped else None
        self.keys, self.days, self.today = keys, days, today
        self.seen: dict[str, int] = {}
        self.places: dict[str, tuple[int, int]] = {}  # the fold's cache, as a worker's
        self.ns = 0

    def batch(self, i: int, size: int) -> None:
        chunk = self.values[i:i + size]
        prepared = Prepared(chunk, list(range(i, i + len(chunk))), [("t/0", 0, len(chunk))],
                            NOW_MS, LATENESS_MS, self.fmts)  # type: ignore[arg-type]
        # CPU time of this process, not wall time: other processes on a shared machine
        # slow both shapes alike instead of whichever ran while they were busy
        t0 = time.process_time_ns()
        w = fold_prepared(prepared, FoldContext(self.keys, self.days, self.today, {}, self.seen,
                                                places=self.places), compiled=self.compiled)
        self.ns += time.process_time_ns() - t0
        self.seen.update(w.new_days)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events (200k)")
    p.add_argument("--users", type=int, default=50_000, help="distinct users (50k)")
    p.add_argument("--days", type=int, default=30, help="days the events span (30)")
    p.add_argument("--batch", type=int, default=10_000, help="values per batch (10k)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (5)")
    args = p.parse_args()

    native: list[bytes | None] = [
        v for _, v in activity_events(args.events, args.users, args.days, NOW_MS)]
    segment: list[bytes | None] = [segment_call(v) for v in native]  # type: ignore[arg-type]
    keys = KeySpace(prefix="b", shards=1, buckets=16384, max_lateness_days=400,
                    retention_days=90)
    days = DayMapper("UTC")
    today = days.day_of_ms(NOW_MS)
    # the two must give the same writes before their speed means anything
    a = fold_prepared(Prepared(native[:5000], list(range(5000)), [("t/0", 0, 5000)], NOW_MS,
                               LATENESS_MS), FoldContext(keys, days, today, {}, {}))
    b = fold_prepared(Prepared(segment[:5000], list(range(5000)), [("t/0", 0, 5000)], NOW_MS,
                               LATENESS_MS, {"t": formats.load("segment")}),  # type: ignore[dict-item]
                      FoldContext(keys, days, today, {}, {}))
    assert a.hll == b.hll and a.shards == b.shards and a.folded == b.folded == 5000
    _tune_gc()  # the worker's garbage-collector settings, as in `python -m stream worker`

    names = ("native", "native (Python path)", "segment track")
    best = dict.fromkeys(names, float("inf"))
    ratios = []
    for _ in range(args.rounds):
        # the shapes interleaved batch by batch, each from a fresh state every round
        streams = [_Stream(native, False, True, keys, days, today),
                   _Stream(native, False, False, keys, days, today),
                   _Stream(segment, True, True, keys, days, today)]
        for i in range(0, len(native), args.batch):
            for st in streams:
                st.batch(i, args.batch)
        for name, st in zip(names, streams, strict=True):
            best[name] = min(best[name], st.ns / len(native))
        ratios.append(streams[0].ns / streams[2].ns)
    size = sum(map(len, native)) / len(native), sum(map(len, segment)) / len(segment)  # type: ignore[arg-type]
    print(f"{len(native):,} activity events of {args.users:,} users in batches of "
          f"{args.batch:,}; native {size[0]:.0f} bytes, Segment track call {size[1]:.0f} "
          f"bytes; compiled fold {'built' if compiled_fold_available() else 'NOT built'}")
    for name, ns in best.items():
        print(f"  {name:<22} {ns:7.0f} ns/event  {1e9 / ns:>10,.0f} events/s")
    print(f"  segment / native rate  {best['native'] / best['segment track']:7.2f} (best of "
          f"each); per round {', '.join(f'{r:.2f}' for r in ratios)}, median "
          f"{statistics.median(ratios):.2f}")
    print(f"  segment / native (Python path) rate "
          f"{best['native (Python path)'] / best['segment track']:.2f}")


if __name__ == "__main__":
    main()

"""A batch holds each (partition, offset) once, whatever its source handed over: a source
re-reading after a seek can hand a partition's messages over twice in one `getmany`,
and the fold checks offsets against those applied before the batch, not within it. No
server: the batch is prepared and folded, never applied."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from stream.engines.faust import _runs_of
from stream.kafka.source import Record, Run, runs_of
from stream.keys import KeySpace
from stream.metrics.health import Health
from stream.settings import Settings
from stream.stages import fold_prepared
from stream.store.store import Store, StoreParams
from stream.timebuckets import DayMapper, FixedClock
from stream.worker import Worker

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class TwoPartitions:
    """Just enough of a `Source` for `Worker._prepare`: t/0 and t/1 are assigned."""

    def assignment(self) -> set[tuple[str, int]]:
        return {("t", 0), ("t", 1)}


def value(i: int) -> bytes:
    return json.dumps({"event_id": f"e{i}", "type": "activity", "user_id": f"u{i}",
                       "ts": "2026-11-30T11:00:00Z"}).encode()


def run(partition: int, offsets: list[int]) -> Run:
    return ("t", partition, [value(100 * partition + o) for o in offsets], offsets)


def worker() -> Worker:
    store = Store(redis.Redis(host="127.0.0.1", port=1), KeySpace(),
                  StoreParams("UTC", 1, 4096))  # never used: nothing here talks to Redis
    source: Any = TwoPartitions()
    return Worker(Settings(), store, source, None,  # type: ignore[arg-type]
                  Health(CollectorRegistry(), 60), DayMapper("UTC"), FixedClock(AT))


def test_a_partition_handed_over_twice_in_one_batch_is_folded_once() -> None:
    w = worker()
    got = [run(0, [0, 1, 2, 3, 4]), run(1, [7, 8]), run(0, [2, 3, 4, 5, 6]), run(0, [1]),
           run(1, [8, 9])]
    batch = w._prepare(got)
    assert batch is not None
    counts, prepared, today, _ = batch
    assert counts == {("t", 0): (7, 6), ("t", 1): (3, 9)}
    assert prepared.runs == [("t/0", 0, 5), ("t/1", 5, 7), ("t/0", 7, 9), ("t/1", 9, 10)]
    assert prepared.offsets == [0, 1, 2, 3, 4, 7, 8, 5, 6, 9]
    assert prepared.values == [value(o) for o in (0, 1, 2, 3, 4, 107, 108, 5, 6, 109)]
    for compiled in (True, False):
        writes = fold_prepared(prepared, w._context(today, {}, {}), compiled)
        # 10 distinct messages of 10 users: each counted once
        assert sum(p.totals.get("e:activity", 0) for p in writes.shards.values()) == 10
        assert writes.last_offset == {"t/0": 6, "t/1": 9}


def test_a_batch_of_repeats_only_is_nothing() -> None:
    w = worker()
    batch = w._prepare([run(0, [3, 4]), run(0, [3]), run(0, [4])])
    assert batch is not None
    counts, prepared, _, _ = batch
    assert counts == {("t", 0): (2, 4)}
    assert prepared.offsets == [3, 4]


def test_runs_start_anew_where_a_partition_offset_falls() -> None:
    records = [Record("t", 0, o, None, b"v%d" % o) for o in (5, 6, 7, 2, 3)]
    assert runs_of(records) == [("t", 0, [b"v5", b"v6", b"v7"], [5, 6, 7]),
                                ("t", 0, [b"v2", b"v3"], [2, 3])]
    events = [SimpleNamespace(message=SimpleNamespace(topic="t", partition=0, offset=o,
                                                      value=b"v%d" % o))
              for o in (5, 6, 2, 3, 3)]
    assert _runs_of(events) == [("t", 0, [b"v5", b"v6"], [5, 6]),
                                ("t", 0, [b"v2", b"v3"], [2, 3]),
                                ("t", 0, [b"v3"], [3])]

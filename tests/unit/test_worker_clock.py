"""The worker folds with the clock and the day mapper it was given at start, not with
ones of its own: a fixed clock in the past decides both the batch's day and its
lateness window. No server: the batch is prepared and folded, never applied."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import redis

from stream.decode import decode
from stream.events import LATE, DeadLetter
from stream.kafka.source import Run
from stream.keys import KeySpace
from stream.metrics.health import Health
from stream.settings import Settings
from stream.stages import fold_prepared
from stream.store.store import Store, StoreParams
from stream.timebuckets import DayMapper, FixedClock, day_number
from stream.worker import Worker

#: 20:00 UTC is 01:30 of the next day in Kolkata (UTC+05:30)
AT = datetime(2020, 3, 1, 20, 0, tzinfo=UTC)
KOLKATA_DAY = day_number(date(2020, 3, 2))


class OnePartition:
    """Just enough of a `Source` for `Worker._prepare`: partition t/0 is assigned."""

    def assignment(self) -> set[tuple[str, int]]:
        return {("t", 0)}


def value(i: int, ts: str) -> bytes:
    return json.dumps({"event_id": f"e{i}", "type": "activity", "user_id": f"u{i}",
                       "ts": ts}).encode()


def test_the_worker_folds_into_the_day_of_the_clock_it_was_given() -> None:
    from prometheus_client import CollectorRegistry

    settings = Settings(timezone="Asia/Kolkata", max_lateness_days=2)
    # a client that is never used: nothing here talks to Redis
    store = Store(redis.Redis(host="127.0.0.1", port=1), KeySpace(),
                  StoreParams("Asia/Kolkata", 1, 4096))
    days = DayMapper("Asia/Kolkata")
    source: Any = OnePartition()
    worker = Worker(settings, store, source, None,  # type: ignore[arg-type]
                    Health(CollectorRegistry(), 60), days, FixedClock(AT))
    assert worker.days is days
    values: list[bytes | None] = [
        value(0, "2020-03-01T20:00:00Z"),  # now: the clock's local day
        value(1, "2020-02-27T20:00:00Z"),  # 4 days before the clock: late
    ]
    run: Run = ("t", 0, values, [0, 1])
    batch = worker._prepare([run])
    assert batch is not None
    _, prepared, today, _ = batch
    assert today == KOLKATA_DAY
    assert prepared.now_ms == 1_583_092_800_000  # 2020-03-01T20:00Z, by hand
    items = [m.item for m in decode(prepared)]
    assert isinstance(items[1], DeadLetter) and items[1].reason == LATE
    writes = fold_prepared(prepared, worker._context(today, {}, {}))
    assert writes.hll == {KOLKATA_DAY: {"u0"}}
    assert [m.offset for m in writes.dead] == [1]

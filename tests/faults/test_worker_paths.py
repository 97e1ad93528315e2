"""Worker recovery paths that are hard to hit with real servers, on fakes."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from stream.kafka.source import Record, runs_of
from stream.keys import KeySpace
from stream.metrics.health import Health
from stream.settings import Settings
from stream.store.store import Conflict
from stream.worker import Worker


class FakeSource:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self) -> set[tuple[str, int]]:
        return {("t", 0)}

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.seeks.append((topic, partition, offset))

    def highwater(self, topic: str, partition: int) -> int | None:
        return 10


class FakeStore:
    """apply: the whole batch fails (a bug), then the first single message conflicts."""

    keys = KeySpace()
    segments = None
    user_ids = None

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        self.stored = stored
        self.calls = 0

    def load_offsets(self, srcs: list[str]) -> dict[tuple[str, int], int]:
        return dict(self.stored)

    def resume_offset(self, applied: dict[tuple[str, int], int], src: str) -> int | None:
        v = applied.get((src, 0))
        return None if v is None else v + 1

    def apply(self, writes: Any, applied: Any, today: int) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("a bug in the batch path")
        raise Conflict("t/0", 3)


def record(offset: int) -> Record:
    ev = {"event_id": f"e{offset}", "type": "activity", "user_id": "u", "ts": 1_700_000_000_000}
    return Record("t", 0, offset, None, json.dumps(ev).encode())


async def test_conflict_while_isolating_a_failed_batch_reloads_offsets() -> None:
    store = FakeStore({("t/0", 0): 3})
    source = FakeSource()
    worker = Worker(Settings(max_lateness_days=3650), store, source, None,  # type: ignore[arg-type]
                    Health(CollectorRegistry()))
    worker.applied[("t/0", 0)] = 7
    worker.seen["u"] = 1
    await worker.process(runs_of([record(8), record(9)]))  # must not raise
    assert source.seeks == [("t", 0, 4)]
    assert worker.applied == {("t/0", 0): 3}
    assert not worker.seen


async def test_partition_unknown_to_redis_is_read_from_its_start() -> None:
    store = FakeStore({})
    source = FakeSource()
    worker = Worker(Settings(), store, source, None,  # type: ignore[arg-type]
                    Health(CollectorRegistry()))
    await worker.on_assigned({("t", 0)})
    assert source.seeks == [("t", 0, 0)]

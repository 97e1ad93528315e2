"""What the worker needs from a Kafka client (`Source`), and the shapes it hands over.

A source hands the worker runs: consecutive messages of one partition as lists of values
and offsets (the compiled record reading fills them without a Python object per message).
The original keys and headers are only read for dead letters, on demand (`origins`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import fetched
from .fetched import Origin


@dataclass(slots=True)
class Record:
    """A consumed message: where it came from, and its raw key and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


#: Consecutive messages of one partition, offsets rising: (topic, partition, values,
#: offsets), a value bytes or None.
Run = tuple[str, int, list[bytes | None], list[int]]


def runs_of(records: list[Record]) -> list[Run]:
    """`records` as runs of one partition each, offsets rising within a run (a new run
    starts where a partition's offset falls, as after a seek back)."""
    runs: list[Run] = []
    i, n = 0, len(records)
    while i < n:
        topic, partition = records[i].topic, records[i].partition
        j = i + 1
        while (j < n and records[j].partition == partition and records[j].topic == topic
               and records[j].offset > records[j - 1].offset):
            j += 1
        runs.append((topic, partition, [r.value for r in records[i:j]],
                     [r.offset for r in records[i:j]]))
        i = j
    return runs


#: Reads the original key and headers of some offsets of one partition (topic, partition,
#: offsets), from what one `getmany` call handed over.
OriginReader = Callable[[str, int, list[int]], dict[int, Origin]]


class RecentOrigins:
    """The original keys and headers of the messages a source handed over in its last
    `keep` non-empty `getmany` calls, read on demand (only dead letters need them, so
    the hot path reads none). The worker produces a batch's dead letters before it asks
    for the batch after the next one (one batch is fetched ahead), so 3 is enough; what
    is kept is a reference to data the source had anyway."""

    def __init__(self, keep: int = 3) -> None:
        self._calls: deque[list[OriginReader]] = deque(maxlen=keep)

    def add(self, readers: list[OriginReader]) -> None:
        if readers:
            self._calls.append(readers)

    def lookup(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        out: dict[int, Origin] = {}
        for call in reversed(self._calls):
            for reader in call:
                left = [o for o in offsets if o not in out]
                if not left:
                    return out
                out.update(reader(topic, partition, left))
        return out


def records_origins(topic: str, partition: int, records: list[Any]) -> OriginReader:
    """An `OriginReader` over aiokafka's records of one partition (`offset`, `key`,
    `headers`)."""

    def read(t: str, p: int, offsets: list[int]) -> dict[int, Origin]:
        if (t, p) != (topic, partition):
            return {}
        wanted = set(offsets)
        return {r.offset: (r.key, _header_list(r.headers)) for r in records
                if r.offset in wanted}

    return read


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    """A record's headers as (name, value) pairs: aiokafka gives a sequence of pairs,
    faust's messages a sequence or a mapping."""
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def chunk_origins(topic: str, partition: int, chunk: fetched.Chunk) -> OriginReader:
    """An `OriginReader` over a chunk of one partition (see `fetched.Chunk.origins`)."""

    def read(t: str, p: int, offsets: list[int]) -> dict[int, Origin]:
        return chunk.origins(offsets) if (t, p) == (topic, partition) else {}

    return read


class Source(Protocol):
    """What the worker needs from a Kafka client; aiokafka's is `AiokafkaSource`.

    A source may also have `log_ranges` (see `offsetrange.probe`): one without it is
    not checked for offsets out of range."""

    async def start(self, on_assigned: Any, on_revoked: Any) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]: ...
    def highwater(self, topic: str, partition: int) -> int | None: ...
    def seek(self, topic: str, partition: int, offset: int) -> None: ...
    async def commit(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def assignment(self) -> set[tuple[str, int]]: ...
    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        """The original key and headers of recently handed-over messages."""
        ...

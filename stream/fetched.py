"""aiokafka's fetched records, handed to the worker as lists of values and offsets.

aiokafka turns every fetched message into objects one at a time (a record, a generator
step, a ConsumerRecord of eleven fields) and the worker then picks two fields out of
each: a good third of the worker's time went there. For a consumer marked by
`raw_value` as its value deserializer, `getall` here reads each fetched record set with
the compiled reader (`stream/_recordbatch.c`: uncompressed batches of message format
v2, CRCs checked) into two lists at once, a `Chunk`. What the compiled reader leaves
(compressed or older batches, anything malformed, or every batch when it is not built)
goes through aiokafka's own reader, so the result is the same either way; only the
time differs. Every other consumer in the process is served by aiokafka as usual.

This leans on aiokafka internals (`Fetcher`'s `MemoryRecords`, `FetchResult.getall`,
`PartitionRecords`' fields), the same from aiokafka 0.11 to 0.14; `install` leaves
aiokafka alone when they are missing. tests/unit/test_recordbatch.py compares the result
with aiokafka's own reader, and the worker's integration tests run it against a broker.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher as _fetcher
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords

try:
    from . import _recordbatch
except ImportError:  # built by `pip install` when a C compiler is present
    _recordbatch = None  # type: ignore[assignment]

log = logging.getLogger("stream.worker")

_DONE, _FULL, _LIBRARY, _BAD_CRC = 0, 1, 2, 3


def raw_value(value: bytes | None) -> bytes | None:
    """The worker's value "deserializer": returns the value as it is, and marks its
    consumer for the list-at-once `getall`."""
    return value


def compiled_reader_available() -> bool:
    """Whether the compiled record-batch reader is built."""
    return _recordbatch is not None


class Chunk:
    """One partition's messages from one `getall`: values (bytes, or None) and their
    offsets, rising. Its length is the message count, as aiokafka's list's was."""

    __slots__ = ("offsets", "values")

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.offsets: list[int] = []

    def __len__(self) -> int:
        return len(self.offsets)


class FetchedRecords:
    """What the fetcher builds for each fetched record set instead of `MemoryRecords`:
    the same reader, plus the raw bytes and a read position for the compiled reader."""

    __slots__ = ("_records", "data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self._records: Any = MemoryRecords(data)

    def has_next(self) -> bool:
        return self._records.has_next()  # type: ignore[no-any-return]

    def next_batch(self) -> Any:
        return self._records.next_batch()

    def size_in_bytes(self) -> int:
        return self._records.size_in_bytes()  # type: ignore[no-any-return]

    def rest_to_library(self) -> None:
        """From `pos` on, aiokafka's reader reads (the generator it iterates asks us)."""
        if self.pos:  # at 0 the reader made up front is still unread: no copy
            self._records = MemoryRecords(self.data[self.pos:])
        self.pos = len(self.data)


def _take(pr: PartitionRecords, records: FetchedRecords, chunk: Chunk, limit: int) -> bool:
    """Append up to `limit` messages of `pr` to `chunk`; True when none are left."""
    try:
        done = _read(pr, records, chunk, limit)
    except BaseException:
        done = True
        raise
    finally:
        if done:
            # The generator aiokafka made up front holds `pr` and `pr` holds it: a cycle
            # that would keep the fetched bytes (megabytes) until a full collection.
            pr._records_iterator = None
    return done


def _read(pr: PartitionRecords, records: FetchedRecords, chunk: Chunk, limit: int) -> bool:
    if records.pos < len(records.data):
        if _recordbatch is None:
            records.rest_to_library()
        else:
            status, records.pos, pr.next_fetch_offset = _recordbatch.read(
                records.data, records.pos, pr.next_fetch_offset, limit, pr._check_crcs,
                chunk.values, chunk.offsets)
            if status == _FULL:
                return False
            if status == _BAD_CRC:
                if chunk.offsets:
                    return False  # hand over what came before it; raise on the next call
                records.pos = len(records.data)  # re-fetched from this batch on
                raise CorruptRecordException(f"Invalid CRC - {pr._tp}")
            if status == _LIBRARY:
                # aiokafka's generator has not run yet (it only runs from here on), so it
                # will read the rest from `records`
                records.rest_to_library()
            else:
                return True
    # aiokafka's reader, for what the compiled one left. Its generator updates
    # next_fetch_offset itself; with `raw_value` it yields aiokafka's own records.
    iterator = pr._records_iterator
    if iterator is None:
        return True
    values, offsets = chunk.values, chunk.offsets
    for record in iterator:
        values.append(record.value)
        offsets.append(record.offset)
        if len(offsets) >= limit:
            return False
    pr._records_iterator = None
    return True


_getall = FetchResult.getall
_consumer_record = PartitionRecords._consumer_record


def _getall_chunk(self: FetchResult, max_records: int | None = None) -> Any:
    pr = self._partition_records
    records = pr._records if pr is not None else None
    if (not isinstance(records, FetchedRecords) or pr._value_deserializer is not raw_value
            or pr._isolation_level != READ_UNCOMMITTED):
        return _getall(self, max_records)
    if not self.check_assignment(self._topic_partition) or not self.has_more():
        return []
    chunk = Chunk()
    done = _take(pr, records, chunk, max_records if max_records is not None else 1 << 62)
    self._update_position()
    if done:
        self._partition_records = None
    return chunk


def _light_record(self: PartitionRecords, tp: Any, record: Any) -> Any:
    """For a `raw_value` consumer, aiokafka's own record (offset and value are all the
    worker reads) instead of a ConsumerRecord of eleven fields."""
    if self._value_deserializer is raw_value:
        return record
    return _consumer_record(self, tp, record)


#: What the patch relies on in aiokafka; without any of it aiokafka is left as it is (the
#: worker then reads ConsumerRecords, only slower).
_NEEDED = ((_fetcher, "MemoryRecords"), (FetchResult, "getall"),
           (FetchResult, "check_assignment"), (FetchResult, "has_more"),
           (FetchResult, "_update_position"), (PartitionRecords, "_unpack_records"),
           (PartitionRecords, "_consumer_record"))


def install() -> bool:
    """Patch aiokafka (idempotent); False when this aiokafka lacks what it relies on.
    Consumers without `raw_value` are not affected."""
    if not all(hasattr(owner, name) for owner, name in _NEEDED):
        log.warning("aiokafka %s is not one the worker's fast record reading knows; "
                    "using aiokafka's records", aiokafka.__version__)
        return False
    _fetcher.MemoryRecords = FetchedRecords
    FetchResult.getall = _getall_chunk
    PartitionRecords._consumer_record = _light_record
    return True

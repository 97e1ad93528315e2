"""aiokafka's fetched records, handed to the worker as lists of values and offsets.

aiokafka turns every fetched message into objects one at a time (a record, a generator
step, a ConsumerRecord of eleven fields) and the worker then picks two fields out of
each: a good third of the worker's time went there. For a consumer marked by
`raw_value` as its value deserializer, `getall` here reads each fetched record set with
the compiled reader (`stream/_recordbatch.c`: batches of message format v2, CRCs
checked) into two lists at once, a `Chunk`. A compressed batch (gzip, snappy, lz4,
zstd) is decompressed (`stream/codecs.py`) and read by the same compiled reader. Batches
of the older message formats (and every batch when the compiled reader is not built) go
through aiokafka's own reader, so the result is the same either way; only the time
differs. Every other consumer in the process is served by aiokafka as usual.

A batch that cannot be read (an unknown codec, data that does not decompress, a CRC
mismatch, malformed records) never stops the partition: it is handed to the worker
whole, as one `Unreadable` value at its last offset, which the worker dead-letters with
reason `unreadable_batch` and its offset range in the headers; the partition moves on.

Keys and headers are not read on the hot path: a chunk keeps a reference to the record
set's bytes (or to aiokafka's records), and `Chunk.origins` reads the key and headers of
the few messages the worker dead-letters.

This leans on aiokafka internals (`Fetcher`'s `MemoryRecords`, `FetchResult.getall`,
`PartitionRecords`' fields), the same from aiokafka 0.11 to 0.14; `install` leaves
aiokafka alone when they are missing. tests/unit/test_recordbatch.py compares the result
with aiokafka's own reader, and the worker's integration tests run it against a broker.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher as _fetcher
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.record.memory_records import MemoryRecords

from .. import _compiled
from ..events import Unreadable
from . import codecs

# When built and not turned off by STREAM_NO_EXTENSIONS (stream/_compiled.py decides).
_recordbatch = _compiled.recordbatch

log = logging.getLogger("stream.worker")

_DONE, _FULL, _LIBRARY, _BAD_CRC, _COMPRESSED, _MALFORMED = 0, 1, 2, 3, 4, 5

#: A message's original key and headers, as the worker's dead letters carry them.
Origin = tuple[bytes | None, list[tuple[str, bytes]]]


def raw_value(value: bytes | None) -> bytes | None:
    """The worker's value "deserializer": returns the value as it is, and marks its
    consumer for the list-at-once `getall`."""
    return value


def compiled_reader_available() -> bool:
    """Whether the compiled record-batch reader is built."""
    return _recordbatch is not None


class Chunk:
    """One partition's messages from one `getall`: values (bytes, or None) and their
    offsets, rising. Its length is the message count, as aiokafka's list's was.

    `data` is the record set the compiled reader read them from and `records` the
    messages aiokafka's reader yielded: what `origins` needs, kept by reference only."""

    __slots__ = ("data", "offsets", "records", "values")

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.offsets: list[int] = []
        self.data: bytes | None = None
        self.records: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def origins(self, offsets: Iterable[int]) -> dict[int, Origin]:
        """The original key and headers of the messages at `offsets` (those it holds)."""
        wanted = set(offsets)
        out: dict[int, Origin] = {}
        for r in self.records or ():
            if r.offset in wanted:
                out[r.offset] = (r.key, list(r.headers))
        if self.data is not None and len(out) < len(wanted):
            out.update(origins_in(self.data, wanted - out.keys()))
        return out


def origins_in(data: bytes, offsets: set[int]) -> dict[int, Origin]:
    """The key and headers of the messages at `offsets` in the record set `data`, read
    again by aiokafka's reader (only for dead letters: the hot path reads no keys)."""
    out: dict[int, Origin] = {}
    if not offsets:
        return out
    records: Any = MemoryRecords(data)
    low, high = min(offsets), max(offsets)
    try:
        while records.has_next() and len(out) < len(offsets):
            batch = records.next_batch()
            if batch is None:
                break
            if getattr(batch, "magic", 2) == 2:
                first = batch.base_offset
                if first > high or first + batch.last_offset_delta < low:
                    continue
            for record in batch:
                if record.offset in offsets:
                    out[record.offset] = (record.key, list(record.headers))
    except Exception as exc:  # an unreadable batch: its messages are dead-lettered whole
        log.debug("keys and headers not read again: %r", exc)
    return out


class FetchedRecords:
    """What the fetcher builds for each fetched record set instead of `MemoryRecords`:
    the same reader, plus the raw bytes and a read position for the compiled reader, and
    the decompressed batch being read (`plain`, standing for `plain_size` bytes at
    `pos`)."""

    __slots__ = ("_records", "data", "library_from", "plain", "plain_size", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.library_from = 0
        self.plain: bytes | None = None
        self.plain_size = 0
        self._records: Any = MemoryRecords(data)

    def has_next(self) -> bool:
        return self._records.has_next()  # type: ignore[no-any-return]

    def next_batch(self) -> Any:
        return self._records.next_batch()

    def size_in_bytes(self) -> int:
        return self._records.size_in_bytes()  # type: ignore[no-any-return]

    def rest_to_library(self, pos: int | None = None) -> None:
        """From `pos` (default: the read position) on, aiokafka's reader reads (the
        generator it iterates asks us)."""
        pos = self.pos if pos is None else pos
        if pos:  # at 0 the reader made up front is still unread: no copy
            self._records = MemoryRecords(self.data[pos:])
        self.library_from = pos
        self.pos = len(self.data)
        self.plain = None


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
            chunk.data = records.data
            status, pr.next_fetch_offset = read_compiled(
                records, pr.next_fetch_offset, limit, pr._check_crcs, chunk)
            if status == _FULL:
                return False
            if status == _LIBRARY:
                # aiokafka's generator has not run yet (it only runs from here on), so it
                # will read the rest from `records`
                records.rest_to_library()
            else:
                return True
    # aiokafka's reader, for what the compiled one left. Its generator updates
    # next_fetch_offset itself; with `raw_value` it yields aiokafka's own records.
    values, offsets = chunk.values, chunk.offsets
    while True:
        iterator = pr._records_iterator
        if iterator is None:
            return True
        if chunk.records is None:
            chunk.records = []
        kept = chunk.records
        try:
            for record in iterator:
                values.append(record.value)
                offsets.append(record.offset)
                kept.append(record)
                if len(offsets) >= limit:
                    return False
        except Exception as exc:
            # 1. The batch holding the next offset is the one aiokafka could not read:
            #    it is handed over whole in place of its messages;
            # 2. aiokafka's reader goes on after it with a new generator (the old one
            #    ended with the exception).
            pos = _entry_holding(records.data, records.library_from, pr.next_fetch_offset)
            if pos is None:
                # No whole batch at or past the fetch offset: nothing of the rest can be
                # handed over; a truncated one is fetched again (and this repeats, logged,
                # until the stall watchdog restarts the worker).
                log.error("record set of %s not readable past offset %d: %r", pr._tp,
                          pr.next_fetch_offset, exc)
                pr._records_iterator = None
                return True
            after, pr.next_fetch_offset = _unreadable(
                records.data, pos, pr.next_fetch_offset, chunk,
                f"{type(exc).__name__}: {exc}")
            records.rest_to_library(after)
            pr._records_iterator = pr._unpack_records()
            if len(offsets) >= limit:
                return False
            continue
        pr._records_iterator = None
        return True


def read_compiled(records: FetchedRecords, next_offset: int, limit: int, check_crcs: bool,
                  chunk: Chunk) -> tuple[int, int]:
    """Read `records` from its position into `chunk` (up to `limit` messages in it) with
    the compiled reader, compressed batches decompressed, unreadable ones handed over
    whole. Returns (status, next offset): status DONE (all read, or up to a truncated
    last batch, which the broker sends whole in the next fetch), FULL (`limit` reached),
    or LIBRARY (a batch of an older format at `records.pos`)."""
    assert _recordbatch is not None
    read = _recordbatch.read
    data = records.data
    values, offsets = chunk.values, chunk.offsets
    while True:
        room = limit - len(offsets)
        plain = records.plain
        if plain is not None:  # a decompressed batch, partly read by an earlier call
            status, end, next_offset = read(plain, 0, next_offset, room, False, values,
                                            offsets)
            if status == _FULL:
                return _FULL, next_offset
            records.plain = None
            if status == _DONE and end == len(plain):
                records.pos += records.plain_size
            else:  # the records inside are malformed
                records.pos, next_offset = _unreadable(
                    data, records.pos, next_offset, chunk,
                    "malformed records in a compressed batch")
            continue
        if room <= 0:
            return (_FULL if records.pos < len(data) else _DONE), next_offset
        status, pos, next_offset = read(data, records.pos, next_offset, room, check_crcs,
                                        values, offsets)
        records.pos = pos
        if status in (_DONE, _FULL, _LIBRARY):
            return status, next_offset
        if status == _COMPRESSED:
            total = _LOG_OVERHEAD + _LENGTH.unpack_from(data, pos + 8)[0]
            try:
                records.plain = codecs.plain_batch(memoryview(data)[pos:pos + total])
            except codecs.CodecError as exc:
                why = str(exc)
            else:
                records.plain_size = total
                continue
        elif status == _BAD_CRC:
            why = "CRC mismatch (corrupt batch)"
        else:
            why = "malformed record batch"
        records.pos, next_offset = _unreadable(data, pos, next_offset, chunk, why)


_LOG_OVERHEAD = 12
_OFFSET_LENGTH = struct.Struct(">qi")  # base offset, length: how every format begins
_LENGTH = struct.Struct(">i")
_LAST_DELTA_AT = 23


def _entry(data: bytes, pos: int) -> tuple[int, int, int]:
    """(first offset, last offset, size) of the batch (or old-format message) at `pos`."""
    base, length = _OFFSET_LENGTH.unpack_from(data, pos)
    total = _LOG_OVERHEAD + max(length, 0)
    if len(data) > pos + 16 and data[pos + 16] >= 2 and total >= _LAST_DELTA_AT + 4 \
            and len(data) >= pos + _LAST_DELTA_AT + 4:
        delta = _LENGTH.unpack_from(data, pos + _LAST_DELTA_AT)[0]
        return base, base + max(delta, 0), total
    return base, base, total  # formats v0 and v1: the offset is the (wrapper's) last one


def _entry_holding(data: bytes, pos: int, offset: int) -> int | None:
    """Where the batch holding `offset` (or the first one after it) starts, from `pos`
    on; None when there is none whole."""
    while len(data) - pos >= _LOG_OVERHEAD:
        _, last, total = _entry(data, pos)
        if pos + total > len(data):
            return None
        if last >= offset:
            return pos
        pos += total
    return None


def _unreadable(data: bytes, pos: int, next_offset: int, chunk: Chunk,
                why: str) -> tuple[int, int]:
    """Hand over the batch at `pos` whole, as one `Unreadable` value at its last offset
    (unless all of it was read already); returns (position after it, next offset)."""
    base, last, total = _entry(data, pos)
    end = min(pos + total, len(data))
    if last >= next_offset:
        first = max(base, next_offset)
        detail = f"record batch of offsets {first}-{last} not readable: {why}"[:500]
        log.error("%s; dead-lettering it whole as unreadable_batch", detail)
        chunk.values.append(Unreadable(data[pos:end], detail, first, last))
        chunk.offsets.append(last)
        next_offset = last + 1
    return end, next_offset


def read_record_set(data: bytes, fetch_offset: int = 0, check_crcs: bool = True,
                    limit: int = 1 << 62) -> tuple[Chunk, int]:
    """A fetched record set read as the worker reads it (the compiled reader, codecs,
    unreadable batches; aiokafka's reader for older formats), `limit` messages a call:
    (every message, in one chunk; the next fetch offset). A plain entry point for tests
    and fuzzing."""
    records = FetchedRecords(data)
    pr = PartitionRecords(None, records, [], fetch_offset, None, raw_value, check_crcs,
                          READ_UNCOMMITTED)
    out = Chunk()
    while True:
        chunk = Chunk()
        done = _take(pr, records, chunk, limit)
        out.values += chunk.values
        out.offsets += chunk.offsets
        out.records = (out.records or []) + (chunk.records or [])
        out.data = data
        if done:
            return out, pr.next_fetch_offset


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

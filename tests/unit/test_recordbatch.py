"""The worker's list-at-once reading of fetched record sets (stream/kafka/fetched.py, with the
compiled reader stream/kafka/_recordbatch.c) against aiokafka's own reader.

Record sets are built with aiokafka's batch builder (an implementation of the format
independent of ours): batches with keys, headers, null and empty values, large values,
batches compressed with every codec (gzip, snappy in xerial framing and plain, lz4,
zstd), control batches, a batch cut off at the end (as a fetch of limited size ends),
fetch offsets inside a batch, and any `max_records`. Whatever the mix, the worker must
get exactly the (offset, value) pairs aiokafka's reader yields, and resume at the same
next offset; and the key and headers of any message on demand, as aiokafka reads them.
Batches that cannot be read come out whole, once, as an `Unreadable` at their last offset.
"""

from __future__ import annotations

import gc
import struct
import weakref
from typing import Any

import cramjam
import pytest
from aiokafka.codec import snappy_encode
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import Unreadable
from stream.kafka import fetched
from stream.kafka.fetched import Chunk, FetchedRecords, raw_value

TP = TopicPartition("t", 0)
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
CODECS = {"gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
CONTROL = 0x20


def test_the_compiled_reader_is_built() -> None:
    """scripts/install.sh installs a compiler: without the reader every message would go
    through aiokafka's, and the comparisons below would not test it."""
    assert fetched.compiled_reader_available()


def batch(base: int, records: list[tuple[bytes | None, bytes | None, list[Any]]],
          codec: int = 0, control: bool = False, gap: int = 0) -> bytes:
    """One record batch at `base`; `gap` leaves offsets unused between records (as
    compaction does)."""
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 10 * 1024 * 1024)
    for i, (key, value, headers) in enumerate(records):
        builder.append(i * (gap + 1), timestamp=1_700_000_000_000 + i, key=key, value=value,
                       headers=headers)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    if control:
        attributes = struct.unpack_from(">h", data, 21)[0] | CONTROL
        struct.pack_into(">h", data, 21, attributes)
        struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


def recompressed(plain: bytes, codec: int, compress: Any) -> bytes:
    """An uncompressed batch with its records compressed by `compress` and marked with
    codec number `codec` (any 0-7), its length and CRC made right: how librdkafka writes
    plain (unframed) snappy, or a batch of a codec nobody knows."""
    records = bytes(compress(plain[61:]))
    data = bytearray(plain[:61]) + records
    struct.pack_into(">i", data, 8, len(data) - 12)
    attributes = struct.unpack_from(">h", data, 21)[0] & ~0x07 | codec
    struct.pack_into(">h", data, 21, attributes)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


def library_read(data: bytes, fetch_offset: int) -> tuple[list[tuple[int, Any]], int]:
    """aiokafka's reader, as a consumer without `raw_value` uses it."""
    pr = PartitionRecords(TP, MemoryRecords(data), [], fetch_offset, None, None, True,
                          READ_UNCOMMITTED)
    got = [(r.offset, r.value) for r in pr]
    return got, pr.next_fetch_offset


def worker_read(data: bytes, fetch_offset: int, limit: int) -> tuple[
    list[tuple[int, Any]], int, int
]:
    """The worker's reader, `limit` messages a call as `getall(max_records)` asks."""
    records = FetchedRecords(data)
    pr = PartitionRecords(TP, records, [], fetch_offset, None, raw_value, True,
                          READ_UNCOMMITTED)
    got: list[tuple[int, Any]] = []
    calls = 0
    while True:
        chunk = Chunk()
        done = fetched._take(pr, records, chunk, limit)
        calls += 1
        assert len(chunk) <= limit
        assert len(chunk.values) == len(chunk.offsets)
        got += zip(chunk.offsets, chunk.values, strict=True)
        if done:
            return got, pr.next_fetch_offset, calls
        assert calls < 10_000


values = st.one_of(st.none(), st.binary(max_size=40),
                   st.binary(min_size=300, max_size=3000))
record = st.tuples(st.one_of(st.none(), st.binary(max_size=10)), values,
                   st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(),
                                                                     st.binary(max_size=8))),
                            max_size=2))
batch_spec = st.tuples(st.lists(record, min_size=1, max_size=12),
                       st.sampled_from(["plain", "plain", "plain", "gzip", "snappy",
                                        "raw-snappy", "lz4", "zstd", "control"]),
                       st.integers(0, 2))


def record_set(specs: list[Any]) -> tuple[bytes, int]:
    """The batches one after the other; returns the data and the first batch's next
    offset."""
    data, base, first_next = b"", 0, 0
    for recs, kind, gap in specs:
        if kind == "control":
            recs = recs[:1]
        if kind == "raw-snappy":
            data += recompressed(batch(base, recs, gap=gap), SNAPPY,
                                 cramjam.snappy.compress_raw)
        else:
            data += batch(base, recs, codec=CODECS.get(kind, 0),
                          control=kind == "control", gap=gap)
        base += (len(recs) - 1) * (gap + 1) + 1
        first_next = first_next or base
    return data, first_next


@settings(max_examples=200, deadline=None)
@given(st.lists(batch_spec, min_size=1, max_size=6), st.integers(0, 200),
       st.integers(1, 40), st.integers(0, 60))
def test_same_messages_as_aiokafka(specs: list[Any], start: int, limit: int,
                                   cut: int) -> None:
    data, first_next = record_set(specs)
    # A broker answers from the batch holding the fetch offset.
    fetch_offset = start % first_next
    # A fetch of limited size ends inside its last batch: that one is not read.
    data = data[:len(data) - cut] if cut < len(data) else data
    expected, expected_next = library_read(data, fetch_offset)
    got, next_offset, _ = worker_read(data, fetch_offset, limit)
    assert got == expected
    assert next_offset == expected_next
    # Every batch, compressed or not, was read by the compiled reader.
    chunk, _ = fetched.read_record_set(data, fetch_offset, limit=limit)
    assert not chunk.records
    assert list(zip(chunk.offsets, chunk.values, strict=True)) == expected
    # Keys and headers on demand, as aiokafka's reader has them.
    want = library_origins(data, fetch_offset)
    assert chunk.origins(want) == want
    assert chunk.origins([o for o, _ in expected[::3]]) == {
        o: want[o] for o, _ in expected[::3]}


def library_origins(data: bytes, fetch_offset: int) -> dict[int, Any]:
    pr = PartitionRecords(TP, MemoryRecords(data), [], fetch_offset, None, None, True,
                          READ_UNCOMMITTED)
    return {r.offset: (r.key, list(r.headers)) for r in pr}


def test_plain_batches_are_read_by_the_compiled_reader() -> None:
    """Whole batches in one call, the values as bytes objects of their own."""
    recs = [(b"k", f"v{i}".encode(), [("h", b"x")]) for i in range(5)]
    data = batch(100, recs) + batch(105, [(None, None, []), (None, b"", [])])
    values: list[bytes | None] = []
    offsets: list[int] = []
    assert fetched._recordbatch is not None
    status, pos, nxt = fetched._recordbatch.read(data, 0, 100, 1000, True, values, offsets)
    assert (status, pos, nxt) == (0, len(data), 107)
    assert offsets == [100, 101, 102, 103, 104, 105, 106]
    assert values == [b"v0", b"v1", b"v2", b"v3", b"v4", None, b""]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "raw-snappy", "lz4", "zstd"])
def test_compressed_batches_are_read_by_the_compiled_reader(codec: str) -> None:
    plain = batch(0, [(None, b"a", []), (None, b"b", [])])
    recs: list[Any] = [(b"k2", b"c", [("h", b"1")]), (None, b"d" * 5000, []), (None, None, [])]
    middle = (recompressed(batch(2, recs), SNAPPY, cramjam.snappy.compress_raw)
              if codec == "raw-snappy" else batch(2, recs, codec=CODECS[codec]))
    data = plain + middle + batch(5, [(None, b"e", [])])
    assert fetched._recordbatch is not None
    # The C reader stops at the compressed batch, its CRC checked: status 4.
    status, pos, nxt = fetched._recordbatch.read(data, 0, 0, 1000, True, [], [])
    assert (status, pos, nxt) == (4, len(plain), 2)
    for limit in (1, 2, 1000):
        got, next_offset, _ = worker_read(data, 0, limit)
        assert got == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d" * 5000), (4, None),
                       (5, b"e")]
        assert next_offset == 6
    chunk, _ = fetched.read_record_set(data)
    assert chunk.records == []  # nothing went through aiokafka's per-message reader
    assert chunk.origins([2, 4]) == {2: (b"k2", [("h", b"1")]), 4: (None, [])}


def unreadable_of(data: bytes, fetch_offset: int = 0, limit: int = 1000) -> list[Any]:
    got, _, _ = worker_read(data, fetch_offset, limit)
    return [(o, (v.first, v.last, bytes(v), v.detail.split(": ", 1)[1])
             if isinstance(v, Unreadable) else v) for o, v in got]


def test_a_corrupt_batch_comes_out_whole_and_the_rest_is_read() -> None:
    good = batch(0, [(None, b"a", []), (None, b"b", [])])
    bad = bytearray(batch(2, [(None, b"c", []), (None, b"c2", [])]))
    bad[-2] ^= 0xFF  # inside the record: the CRC no longer matches
    after = batch(4, [(None, b"d", [])])
    data = good + bytes(bad) + after
    for limit in (1, 2, 3, 100):
        assert unreadable_of(data, limit=limit) == [
            (0, b"a"), (1, b"b"), (3, (2, 3, bytes(bad), "CRC mismatch (corrupt batch)")),
            (4, b"d")]
    # from inside it: only the offsets not read before are named
    assert unreadable_of(data, 3) == [(3, (3, 3, bytes(bad), "CRC mismatch (corrupt batch)")),
                                      (4, b"d")]
    # aiokafka's own reader raises at it
    with pytest.raises(CorruptRecordException):
        library_read(data, 0)
    # so does the path without the compiled reader, which then hands it over the same way
    records = FetchedRecords(data)
    pr = PartitionRecords(TP, records, [], 0, None, raw_value, True, READ_UNCOMMITTED)
    chunk = Chunk()
    saved = fetched._recordbatch
    try:
        fetched._recordbatch = None
        assert fetched._take(pr, records, chunk, 100)
    finally:
        fetched._recordbatch = saved
    assert chunk.offsets == [0, 1, 3, 4]
    assert isinstance(chunk.values[2], Unreadable) and bytes(chunk.values[2]) == bytes(bad)
    assert pr.next_fetch_offset == 5


@pytest.mark.parametrize(("codec", "compress", "why"), [
    (5, cramjam.zstd.compress, "unknown compression codec 5 (attributes bits 0-2)"),
    (7, bytes, "unknown compression codec 7 (attributes bits 0-2)"),
    (LZ4, cramjam.gzip.compress, "lz4 data not readable"),
    (GZIP, lambda b: b"\x1f\x8b" + bytes(b), "gzip data not readable"),
    (SNAPPY, lambda b: b"\x82SNAPPY\x00" + bytes(b), "snappy data not readable"),
    (ZSTD, lambda b: bytes(cramjam.zstd.compress(b))[:-3], "zstd data not readable"),
    # a xerial block length that does not move forward (it looped for ever)
    (SNAPPY, lambda b: b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, -4) + b"abcd",
     "snappy block length -4"),
])
def test_a_batch_that_does_not_decompress_comes_out_whole(codec: int, compress: Any,
                                                           why: str) -> None:
    bad = recompressed(batch(2, [(None, b"c", []), (None, b"d", [])]), codec, compress)
    data = batch(0, [(None, b"a", []), (None, b"b", [])]) + bad + batch(4, [(None, b"e", [])])
    got = unreadable_of(data)
    assert [o for o, _ in got] == [0, 1, 3, 4]
    first, last, raw, detail = got[2][1]
    assert (first, last, raw) == (2, 3, bad)
    assert detail.startswith(why)
    assert got[3] == (4, b"e")


def _xerial(b: bytes) -> bytes:
    return bytes(snappy_encode(b, xerial_compatible=True))


BOMBS = {GZIP: cramjam.gzip.compress, LZ4: cramjam.lz4.compress, ZSTD: cramjam.zstd.compress,
         SNAPPY: cramjam.snappy.compress_raw, 10 + SNAPPY: _xerial}


@pytest.mark.parametrize("codec", sorted(BOMBS))
def test_a_batch_that_decompresses_past_the_limit_comes_out_whole(codec: int) -> None:
    """A few kB that would expand to gigabytes must not stop the worker for lack of
    memory (and again at every restart): past 64 MiB the batch is unreadable."""
    plain = batch(2, [(None, b"c", []), (None, b"d", [])])
    bad = recompressed(plain, codec % 10,
                       lambda b: BOMBS[codec](bytes(b) + bytes((64 << 20) + 1 - len(b))))
    assert len(bad) < 4 << 20
    data = batch(0, [(None, b"a", [])]) + bad + batch(4, [(None, b"e", [])])
    got = unreadable_of(data)
    assert [o for o, _ in got] == [0, 3, 4]
    first, last, raw, detail = got[1][1]
    assert (first, last, raw) == (2, 3, bad)
    assert "records decompress to more than 64 MiB" in detail
    assert got[2] == (4, b"e")


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_a_batch_that_compresses_very_well_is_read(codec: str) -> None:
    """Far above the first output buffer's guess (16 times the compressed size: these
    codecs do not state the size), below the limit: read, with the same values as
    aiokafka's reader."""
    big = bytes(8 << 20)
    data = batch(0, [(None, big, []), (None, b"x" * 1000, [])], CODECS[codec])
    assert len(data) * 16 * 4 < len(big)  # at least two larger buffers
    assert worker_read(data, 0, 10)[0] == library_read(data, 0)[0]


def test_malformed_records_inside_a_compressed_batch_come_out_whole() -> None:
    # the records of the batch, decompressed, end in the middle of one
    plain = batch(2, [(None, b"c", []), (None, b"d", [])])
    bad = recompressed(plain, ZSTD, lambda b: cramjam.zstd.compress(bytes(b)[:-2]))
    got = unreadable_of(batch(0, [(None, b"a", []), (None, b"b", [])]) + bad)
    assert got[:2] == [(0, b"a"), (1, b"b")]
    assert got[2][0] == 3 and got[2][1][:3] == (2, 3, bad)
    assert got[2][1][3] == "malformed records in a compressed batch"


def test_a_batch_header_too_short_comes_out_whole() -> None:
    good = batch(0, [(None, b"a", [])])
    short = bytearray(good[:40])
    struct.pack_into(">qi", short, 0, 1, 28)  # a v2 batch of 40 bytes: no room for records
    data = good + bytes(short) + batch(2, [(None, b"z", [])])
    got = unreadable_of(data)
    assert got[0] == (0, b"a")
    assert got[1][0] == 1 and got[1][1][2] == bytes(short)
    assert got[2] == (2, b"z")


def test_read_record_sets_are_freed_without_the_cycle_collector() -> None:
    """aiokafka's PartitionRecords and the generator it makes up front refer to each
    other; once the worker has read everything, nothing may keep the fetched bytes (a few
    megabytes per partition and fetch) waiting for a full garbage collection."""
    data = batch(0, [(None, b"x" * 100, [])] * 50)
    gc.disable()
    try:
        records = FetchedRecords(data)
        pr = PartitionRecords(TP, records, [], 0, None, raw_value, True, READ_UNCOMMITTED)
        chunk = Chunk()
        assert fetched._take(pr, records, chunk, 1000)
        assert len(chunk) == 50
        gone = weakref.ref(pr)
        del pr, records
        assert gone() is None
    finally:
        gc.enable()


def test_without_the_compiled_reader_aiokafka_reads_it_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = record_set([([(None, b"a", []), (b"k", None, [])], "plain", 0),
                          ([(None, b"b", [])], "gzip", 1),
                          ([(None, b"c", [("h", b"1")])], "plain", 0)])
    monkeypatch.setattr(fetched, "_recordbatch", None)
    for limit in (1, 2, 100):
        got, next_offset, _ = worker_read(data, 0, limit)
        assert (got, next_offset) == library_read(data, 0)
        assert [v for _, v in got] == [b"a", None, b"b", b"c"]


@settings(max_examples=300, deadline=None)
@given(st.lists(batch_spec, min_size=1, max_size=4), st.data())
def test_damaged_record_sets_never_stop_the_reader(specs: list[Any], data: Any) -> None:
    """Bytes of a record set overwritten at random (a length, a magic byte, a codec bit,
    a record): the reader never raises, hands each offset over once, rising, and every
    batch it cannot read comes out whole."""
    raw, _ = record_set(specs)
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    for limit in (3, 1 << 30):
        chunk, next_offset = fetched.read_record_set(bytes(damaged), limit=limit)
        assert chunk.offsets == sorted(set(chunk.offsets))
        assert not chunk.offsets or next_offset > chunk.offsets[-1]
        for offset, value in zip(chunk.offsets, chunk.values, strict=True):
            if isinstance(value, Unreadable):
                assert value.first <= value.last == offset
                assert bytes(value) in damaged

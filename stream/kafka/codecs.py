"""Kafka's compression codecs, for the compiled record reading of compressed batches.

A record batch of message format v2 compresses only its records; its 61-byte header
stays plain. `plain_batch` turns a compressed batch into the same batch uncompressed, so
the compiled reader (stream/kafka/_recordbatch.c) reads every codec the way it reads plain
batches. The codecs are cramjam's (the library aiokafka itself uses), a runtime
dependency: gzip, snappy (Kafka's xerial framing, which the Java client writes, and
plain snappy, which librdkafka writes), lz4 (the LZ4 frame format, KIP-57) and zstd.

Pure: bytes in, bytes out; anything it cannot decompress raises `CodecError`, and so does
a batch whose records would decompress to more than `MAX_RECORDS_BYTES` (a small batch
crafted to expand to gigabytes would otherwise stop the worker for lack of memory, and
again at every restart): the worker hands it over as an unreadable batch.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import cramjam
from aiokafka.codec import _detect_xerial_stream, snappy_decode

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
#: The codec of each attributes value (its lowest three bits), as Kafka names them.
NAMES: Final = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

#: Where a v2 batch's fields are (see stream/kafka/_recordbatch.c).
_LENGTH_AT, _ATTRIBUTES_AT, _HEADER_SIZE, _LOG_OVERHEAD = 8, 21, 61, 12
_CODEC_MASK = 0x07
#: A batch's length is a 32-bit signed integer: no decompressed batch can be longer.
_MAX_LENGTH = (1 << 31) - 1
#: Most bytes the records of one batch may decompress to: 64 MiB, over 60 times the
#: largest batch a broker accepts by default (`message.max.bytes`, 1 MiB), compressed.
MAX_RECORDS_BYTES: Final = 64 << 20
_MIB = MAX_RECORDS_BYTES >> 20
#: The first output buffer for gzip, lz4 and zstd, as a multiple of the compressed size
#: (JSON events compress 3-6 times); a batch that needs more is decompressed again into
#: a buffer 4 times larger, up to MAX_RECORDS_BYTES.
_FIRST_GUESS = 16
_MIN_BUFFER = 64 << 10
#: cramjam's words when the output buffer is too small.
_BUFFER_FULL = "failed to write whole buffer"


class CodecError(ValueError):
    """A batch whose records cannot be decompressed (unknown codec, corrupt data)."""


def decompress(codec: int, payload: bytes | memoryview) -> bytes | memoryview:
    """The records of a batch compressed with `codec` (an attributes codec number)."""
    name = NAMES.get(codec)
    if name is None or codec == NONE:
        raise CodecError(f"unknown compression codec {codec} (attributes bits 0-2)")
    try:
        if codec == SNAPPY:
            # xerial framing or plain snappy; aiokafka tells them apart by the header.
            # Snappy states each block's decompressed size up front: checked first.
            if _snappy_size(payload) > MAX_RECORDS_BYTES:
                raise CodecError(f"snappy records decompress to more than {_MIB} MiB")
            out: bytes = snappy_decode(payload)
            return out
        module = cramjam.gzip if codec == GZIP else cramjam.lz4 if codec == LZ4 else cramjam.zstd
        return _bounded(module.decompress_into, payload, name)
    except CodecError:
        raise
    except Exception as exc:  # cramjam's DecompressionError, struct errors of xerial framing
        raise CodecError(f"{name} data not readable: {exc}") from exc



def _bounded(into: Any, payload: bytes | memoryview, name: str) -> memoryview:
    """`payload` decompressed by `into` (a cramjam `decompress_into`) into a buffer of at
    most MAX_RECORDS_BYTES, never more: a buffer too small is refused by cramjam, and the
    next try gets one 4 times larger."""
    size = min(MAX_RECORDS_BYTES, max(_MIN_BUFFER, len(payload) * _FIRST_GUESS))
    while True:
        out = bytearray(size)
        try:
            n = into(payload, out)
        except Exception as exc:
            if _BUFFER_FULL not in str(exc):
                raise
            if size >= MAX_RECORDS_BYTES:
                raise CodecError(f"{name} records decompress to more than {_MIB} MiB") from None
            size = min(MAX_RECORDS_BYTES, size * 4)
            continue
        return memoryview(out)[:n]


def _snappy_size(payload: bytes | memoryview) -> int:
    """The decompressed size snappy data states: the sum of its blocks' in Kafka's xerial
    framing (16-byte header, then blocks each after its 32-bit length), else its own."""
    view = memoryview(payload)
    if not _detect_xerial_stream(view):
        return int(cramjam.snappy.decompress_raw_len(view))
    total, pos = 0, 16
    while pos < len(view):
        (block,) = struct.unpack_from(">i", view, pos)
        pos += 4
        if block <= 0 or pos + block > len(view):
            # a length that does not move forward would loop here for ever
            raise CodecError(f"snappy block length {block} at {pos - 4} out of bounds")
        total += int(cramjam.snappy.decompress_raw_len(view[pos:pos + block]))
        pos += block
    return total


def codec_of(batch: bytes | memoryview) -> int:
    """The codec number of a v2 record batch (its attributes' lowest bits)."""
    if len(batch) < _HEADER_SIZE:
        raise CodecError("record batch shorter than its header")
    return int(struct.unpack_from(">h", batch, _ATTRIBUTES_AT)[0]) & _CODEC_MASK


def plain_batch(batch: bytes | memoryview) -> bytes:
    """A compressed v2 record batch (whole, from its base offset) as the same batch with
    its records decompressed: the codec bits cleared and the length set to the new size.
    The CRC is left as it was (it was checked on the compressed batch, the bytes the
    producer sealed), so read the result with CRC checks off."""
    codec = codec_of(batch)
    records = decompress(codec, memoryview(batch)[_HEADER_SIZE:])
    length = _HEADER_SIZE - _LOG_OVERHEAD + len(records)
    if length > _MAX_LENGTH:
        raise CodecError(f"{NAMES[codec]} records decompress to more than 2 GiB")
    header = bytearray(batch[:_HEADER_SIZE])
    struct.pack_into(">i", header, _LENGTH_AT, length)
    attributes = struct.unpack_from(">h", header, _ATTRIBUTES_AT)[0]
    struct.pack_into(">h", header, _ATTRIBUTES_AT, attributes & ~_CODEC_MASK)
    return b"".join((header, records))

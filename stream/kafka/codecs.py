"""Kafka's compression codecs, for the compiled record reading of compressed batches.

A record batch of message format v2 compresses only its records; its 61-byte header
stays plain. `plain_batch` turns a compressed batch into the same batch uncompressed, so
the compiled reader (stream/_recordbatch.c) reads every codec the way it reads plain
batches. The codecs are cramjam's (the library aiokafka itself uses), a runtime
dependency: gzip, snappy (Kafka's xerial framing, which the Java client writes, and
plain snappy, which librdkafka writes), lz4 (the LZ4 frame format, KIP-57) and zstd.

Pure: bytes in, bytes out; anything it cannot decompress raises `CodecError`.
"""

from __future__ import annotations

import struct
from typing import Final

import cramjam
from aiokafka.codec import snappy_decode

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
#: The codec of each attributes value (its lowest three bits), as Kafka names them.
NAMES: Final = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

#: Where a v2 batch's fields are (see stream/_recordbatch.c).
_LENGTH_AT, _ATTRIBUTES_AT, _HEADER_SIZE, _LOG_OVERHEAD = 8, 21, 61, 12
_CODEC_MASK = 0x07
#: A batch's length is a 32-bit signed integer: no decompressed batch can be longer.
_MAX_LENGTH = (1 << 31) - 1


class CodecError(ValueError):
    """A batch whose records cannot be decompressed (unknown codec, corrupt data)."""


def decompress(codec: int, payload: bytes | memoryview) -> bytes | cramjam.Buffer:
    """The records of a batch compressed with `codec` (an attributes codec number)."""
    name = NAMES.get(codec)
    if name is None or codec == NONE:
        raise CodecError(f"unknown compression codec {codec} (attributes bits 0-2)")
    try:
        if codec == GZIP:
            return cramjam.gzip.decompress(payload)
        if codec == SNAPPY:
            # xerial framing or plain snappy; aiokafka tells them apart by the header
            out: bytes = snappy_decode(payload)
            return out
        if codec == LZ4:
            return cramjam.lz4.decompress(payload)
        return cramjam.zstd.decompress(payload)
    except Exception as exc:  # cramjam's DecompressionError, struct errors of xerial framing
        raise CodecError(f"{name} data not readable: {exc}") from exc


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

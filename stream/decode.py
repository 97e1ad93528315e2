"""Decode stage: a consumed batch's values -> `Message`s, before the fold.

No I/O here. The worker gathers a batch into a `Prepared` (values and offsets in runs of
one partition each) and `decode` turns it, or some of its messages, into `Message`s for
`fold.fold`: native topics through `events.decode_batch`, mapped topics (contract
section 5) through their format's `Mapper`. `stages.fold_prepared` runs this stage and the
fold as one, with a compiled shortcut for plain activity messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from .events import UNREADABLE_BATCH, DeadLetter, Event, Ignored, Unreadable, decode_batch

if TYPE_CHECKING:
    from .formats import Mapper


class Message(msgspec.Struct, gc=False):
    """One consumed Kafka message after decoding. `src` is `<topic>/<partition>`.

    One is built per message: a msgspec Struct outside the garbage collector's tracking
    (it holds no cycles) is the cheapest object to build and to collect."""

    src: str
    offset: int
    item: Event | DeadLetter | Ignored
    value: bytes | None = None


@dataclass(slots=True)
class Prepared:
    """A consumed batch before decoding: the values and offsets of its messages, in runs
    of one partition each: `runs` holds (src, start, stop) index ranges, offsets rising
    within a run. `now_ms` is the processor's clock and `lateness_ms` the accepted age,
    both in milliseconds, as for `events.decode`."""

    values: list[bytes | None]
    offsets: list[int]
    runs: list[tuple[str, int, int]]
    now_ms: int
    lateness_ms: int
    #: topic -> the mapper of its format (contract section 5), for the topics that are
    #: not `native`; their messages are decoded by it instead of `decode_batch`
    formats: Mapping[str, Mapper] | None = None

    def mapped(self, src: str) -> Mapper | None:
        """The mapper of `src`'s topic, None when it is native."""
        return self.formats.get(src.rpartition("/")[0]) if self.formats else None


def decode(batch: Prepared, indices: Iterable[int] | None = None) -> list[Message]:
    """The decoded messages of `batch` at `indices` (default all), in that order."""
    values, offsets = batch.values, batch.offsets
    idx = list(range(len(values))) if indices is None else list(indices)
    src_at = [""] * len(values)
    for src, start, stop in batch.runs:
        src_at[start:stop] = [src] * (stop - start)
    items: list[Event | DeadLetter | Ignored] = (
        _mapped_items(batch, idx, src_at) if batch.formats
        else list(decode_batch([values[i] for i in idx], batch.now_ms, batch.lateness_ms)))
    if Unreadable in map(type, (values[i] for i in idx)):
        # a record batch in place of its messages, whatever the topic's format
        for n, i in enumerate(idx):
            value = values[i]
            if isinstance(value, Unreadable):
                items[n] = DeadLetter(UNREADABLE_BATCH, value.detail)
    return [Message(src_at[i], offsets[i], item, values[i])
            for i, item in zip(idx, items, strict=True)]


def _mapped_items(batch: Prepared, idx: list[int],
                  src_at: list[str]) -> list[Event | DeadLetter | Ignored]:
    """The decoded items of `decode` when some topics are mapped: each run of one source
    decoded by its topic's format (native ones by `decode_batch`), in the order of
    `idx`."""
    values = batch.values
    items: list[Event | DeadLetter | Ignored] = []
    start = 0
    while start < len(idx):
        src = src_at[idx[start]]
        stop = start + 1
        while stop < len(idx) and src_at[idx[stop]] == src:
            stop += 1
        run = [values[i] for i in idx[start:stop]]
        mapper = batch.mapped(src)
        if mapper is None:
            items += decode_batch(run, batch.now_ms, batch.lateness_ms)
        else:
            items += mapper.decode_batch(run, batch.now_ms, batch.lateness_ms)
        start = stop
    return items

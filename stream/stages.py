"""The decode and fold stages as one call on a consumed batch, with a compiled shortcut.

`fold_prepared(batch, ctx)` writes what `fold.fold(decode.decode(batch), ctx)` writes.
Its compiled shortcut (stream/_fastfold.c, the stage pair's compiled twin) folds the
plain activity messages straight from their bytes: no decoded struct or `Message` per
message, which is most of a batch's Python work. Whatever it does not take goes through
the two Python stages. Kept as one call for speed only: the stages' meaning is that of
`decode` followed by `fold`.
"""

from __future__ import annotations

from typing import Any

from . import _compiled
from .decode import Prepared, decode
from .fold import FoldContext, _ceilings, _note_base, fold
from .store.wire import LATE_BUCKET_FIELDS, TYPE_FIELDS, BatchWrites, ShardPlan

# The optional compiled shortcut for plain activity messages (stream/_fastfold.c), when
# built and not turned off by STREAM_NO_EXTENSIONS (stream/_compiled.py decides).
_fastfold = _compiled.fastfold

_ACTIVITY = TYPE_FIELDS[0]


def compiled_fold_available() -> bool:
    """True when the compiled shortcut (stream/_fastfold.c) was built and imports."""
    return _fastfold is not None


def fold_prepared(batch: Prepared, ctx: FoldContext, compiled: bool = True) -> BatchWrites:
    """`fold(decode(batch), ctx)`, the same writes, but with the compiled shortcut (when
    built, and unless `compiled` is False) decoding and folding the plain activity
    messages in one pass over their bytes. Whatever it does not take (other types,
    unusual formatting, bad input, redeliveries) goes through `decode` and `fold` into
    the same writes. Activity writes are sets, idempotent and order-free, so splitting
    the batch this way changes nothing."""
    out = BatchWrites()
    if _fastfold is None or not compiled or ctx.segments or not batch.values:
        return fold(decode(batch), ctx, out)
    keys, days, today, applied = ctx.keys, ctx.days, ctx.today, ctx.applied
    seen = ctx.seen
    plans = [ShardPlan() for _ in range(keys.shards)]
    utc = days.utc
    state = (batch.now_ms, batch.lateness_ms, keys.shards, utc,
             {} if utc else days.slot_cache, days.day_of_ms, today - keys.retention_days,
             today - keys.bitmap_days, seen,  # a UserMap or a dict (stream/usermap.py)
             out.hll, [p.activity for p in plans], out.new_days, today)
    hashed = ctx.user_ids  # the compiled fold hashes through the same cache
    full: tuple[Any, ...] = state if hashed is None else (*state, hashed.cache, hashed)
    ceilings = _ceilings(applied)
    left: list[int] = []
    for src, start, stop in batch.runs:
        mapper = batch.mapped(src) if batch.formats else None
        if mapper is not None and not mapper.compiled_shape:
            # a mapped topic's messages are not in section 1's shape: the Python path
            # decodes them through their mapping
            left += range(start, stop)
            if stop > start:
                last = max(batch.offsets[start:stop])
                if out.last_offset.get(src, -1) < last:
                    out.last_offset[src] = last
            continue
        # shape 0: section-1 activity events; a mapping's own shape (the `segment`
        # preset's track and screen calls) otherwise
        taken, rest, late = _fastfold.fold_activity(
            batch.values, batch.offsets, start, stop, ceilings.get(src, -1), full,
            0 if mapper is None else mapper.compiled_shape)
        left += rest
        if stop > start:
            last = max(batch.offsets[start:stop])
            if out.last_offset.get(src, -1) < last:
                out.last_offset[src] = last
        for shard, n in enumerate(taken):
            if n:
                totals = plans[shard].totals
                totals[_ACTIVITY] = totals.get(_ACTIVITY, 0) + n
                out.folded += n
                # late[shard][k]: activity events of age bucket k taken for the shard
                for lf, k in zip(LATE_BUCKET_FIELDS, late[shard], strict=True):
                    if k:
                        totals[lf] = totals.get(lf, 0) + k
    for shard, plan in enumerate(plans):
        if plan.totals:
            out.shards[shard] = plan
    if left:
        fold(decode(batch, left), ctx, out)
    else:
        _note_base(out, applied, keys.shards)
    return out

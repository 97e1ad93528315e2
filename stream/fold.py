"""Pure fold: a batch of decoded messages -> the Redis writes it implies, grouped by key.

No I/O and no decoding here: the messages come from the decode stage (stream/decode.py),
and what the fold reads besides them comes in one `FoldContext`. The store
(store/store.py) sends what this module returns in one round trip per batch: PFADDs
grouped per day (one multi-member command per key), and per shard one plan that a Lua
script applies atomically together with the batch's Kafka offsets.

Why grouping matters: a pipeline of one command per event was ~30x slower than one
multi-member PFADD per key per batch; the per-event Python work here is a few dict and
set operations.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import campaigns
from .decode import Message
from .events import ACTIVITY, CONVERSION, SURVEY, VISIT, DeadLetter, Ignored
from .events import CANCELLATION as CANCELLATION_EVENT
from .events import SIGNUP as SIGNUP_EVENT
from .keys import KeySpace
from .store.wire import (
    CANCELLATION,
    CONVERSION_KIND,
    CONVERSION_PREFIX,
    DEAD_LETTER_PREFIX,
    IGNORED_PREFIX,
    LATE_FIELDS,
    SIGNUP,
    SURVEY_FIELDS,
    SURVEY_KINDS,
    TYPE_FIELDS,
    VISIT_KIND,
    VISIT_PREFIX,
    BatchWrites,
    Claim,
    ShardPlan,
    survey_field,
    survey_kind,
)
from .timebuckets import DayMapper
from .usermap import UserTable, plain_table

if TYPE_CHECKING:
    from .privacy import UserIdHasher
    from .segments import Segments



@dataclass(frozen=True, slots=True)
class FoldContext:
    """What a fold reads besides its messages, built by the caller once per batch.

    `applied[(src, shard)]` is the last offset of `src` already applied in `shard`
    (missing = none); `seen` maps a user to a day whose activity of the user is known to
    be in Redis already; `today` is the local day number under `days`. The last three
    are the caller's long-lived state, passed by reference: `user_ids` hashes user ids
    before they are placed or stored (STREAM_USER_ID_KEY; None: ids as they come),
    `segments` is the segment registry (None: no segments), and `places` remembers
    users' (shard, bucket): a dict hit is several times cheaper than hashing the id
    again, and users repeat within and across batches, so a worker keeps one for good."""

    keys: KeySpace
    days: DayMapper
    today: int
    applied: Mapping[tuple[str, int], int]
    seen: UserTable = field(default_factory=plain_table)
    dead_letter_shard: int = 0
    user_ids: UserIdHasher | None = None
    segments: Segments | None = None
    places: dict[str, tuple[int, int]] = field(default_factory=dict)


def digest(event_id: str) -> str:
    """96-bit digest of an event id, base64 (16 characters): a collision among billions of
    ids is practically impossible, and it is half the memory of a UUID string. Text, not
    bytes, because Redis's Lua msgpack decoder predates msgpack's binary type."""
    return base64.b64encode(hashlib.blake2b(event_id.encode(), digest_size=12).digest()).decode()


#: Users whose (shard, bucket) a `places` cache holds at most; then it is cleared.
_PLACES_MAX = 300_000


def _note_base(out: BatchWrites, applied: Mapping[tuple[str, int], int], shards: int) -> None:
    """Record in `out.base` the offsets the fold skipped messages against."""
    base = out.base
    for src in out.last_offset:
        for shard in range(shards):
            base[(src, shard)] = applied.get((src, shard), -1)


def _ceilings(applied: Mapping[tuple[str, int], int]) -> dict[str, int]:
    """src -> the highest offset of it that any shard has applied: messages above it,
    nearly all of them, need no per-shard redelivery check."""
    out: dict[str, int] = {}
    for (src, _), off in applied.items():
        out[src] = max(out.get(src, off), off)
    return out


def fold(messages: Iterable[Message], ctx: FoldContext,
         into: BatchWrites | None = None) -> BatchWrites:
    """Fold decoded messages into the writes they imply (see `FoldContext`).

    A message at or below `ctx.applied[(src, shard)]` is skipped, which is how a
    redelivered batch changes nothing. A (user, day) in `ctx.seen` needs neither a PFADD
    nor a bit. Days older than the store's retention get no HyperLogLog write (the key
    would already have expired). Dead letters and ignored messages are counted in
    `ctx.dead_letter_shard`.
    With `into`, the writes are added to those it holds already."""
    out = BatchWrites() if into is None else into
    keys, today, applied = ctx.keys, ctx.today, ctx.applied
    dead_letter_shard = ctx.dead_letter_shard
    known = ctx.seen
    new_days = out.new_days
    batch_ids: set[str] = set()
    shards = out.shards
    hll = out.hll
    last = out.last_offset
    oldest_hll_day = today - keys.retention_days
    oldest_bit_day = today - keys.bitmap_days
    day_of = ctx.days.day_of_ms
    place_of = keys.user_shard_bucket
    places = ctx.places
    ceiling = _ceilings(applied)
    seg = ctx.segments or None
    hashed = ctx.user_ids
    if seg is not None:
        dims = seg.dims
        maps = seg.mapping
        ndims = range(len(dims))
        shll = out.shll
        pending = out.pending

        def values_of(props: dict[str, str] | None) -> tuple[str, ...]:
            """The event's segment value per dimension (raw when the registry must tell)."""
            vals = []
            for i in ndims:
                raw = props.get(dims[i]) if props else None
                v = maps[i].get(raw)
                if v is None:
                    v = seg.lookup(i, raw)
                    if v is None:
                        assert raw is not None
                        pending[(i, raw)] = None
                        v = raw
                vals.append(v)
            return tuple(vals)
    for m in messages:
        src = m.src
        if last.get(src, -1) < m.offset:
            last[src] = m.offset
        item = m.item
        if isinstance(item, DeadLetter | Ignored):
            # Both are counted in the dead-letter shard's totals, atomically with that
            # shard's offsets (so a redelivery is not counted twice); a dead letter is
            # also produced, an ignored message writes nothing else.
            if m.offset <= applied.get((src, dead_letter_shard), -1):
                continue
            if isinstance(item, DeadLetter):
                out.dead.append(m)
            plan = shards.get(dead_letter_shard)
            if plan is None:
                plan = shards[dead_letter_shard] = ShardPlan()
            field = (DEAD_LETTER_PREFIX if isinstance(item, DeadLetter)
                     else IGNORED_PREFIX) + item.reason
            plan.totals[field] = plan.totals.get(field, 0) + 1
            continue
        user = item.user_id
        if hashed is not None:  # before the id is placed or stored anywhere
            user = hashed(user)
        place = places.get(user)
        if place is None:
            if len(places) >= _PLACES_MAX:
                places.clear()
            place = places[user] = place_of(user)
        shard, bucket = place
        if item.type_code == VISIT or item.type_code == CONVERSION:
            # A campaign's counters live in one shard (its top campaigns are then those of
            # the store, stream/campaigns.py); before the check below, which must ask the
            # shard the writes go to whether it applied this message already.
            shard = campaigns.shard_of(campaigns.stored_name(item.campaign or ""), keys.shards)
        if m.offset <= ceiling.get(src, -1) and m.offset <= applied.get((src, shard), -1):
            continue
        out.folded += 1
        plan = shards.get(shard)
        if plan is None:
            plan = shards[shard] = ShardPlan()
        tf = TYPE_FIELDS[item.type_code]
        plan.totals[tf] = plan.totals.get(tf, 0) + 1
        day = day_of(item.ts_ms)
        if day < today:
            lf = LATE_FIELDS[min(today - day, 31)]
            plan.totals[lf] = plan.totals.get(lf, 0) + 1
        code = item.type_code
        if code == ACTIVITY:
            if seg is not None:
                vals = values_of(item.props)
                if day >= oldest_hll_day:
                    for i in ndims:
                        members = shll.get((i, vals[i], day))
                        if members is None:
                            members = shll[(i, vals[i], day)] = set()
                        members.add(user)
            if known.get(user) == day:
                continue
            if day >= oldest_hll_day:
                members = hll.get(day)
                if members is None:
                    members = hll[day] = set()
                elif user in members:
                    continue  # a repeat inside this batch
                members.add(user)
            if day > oldest_bit_day:
                users = plan.activity.get(day)
                if users is None:
                    plan.activity[day] = [user]
                else:
                    users.append(user)
            if new_days.get(user, day - 1) < day:
                new_days[user] = day
            continue
        # A repeat inside this batch: the earlier message wins, whatever the two types
        # (the Lua script claims customer events and counters in separate loops, so the
        # batch's order must be settled here).
        if item.event_id in batch_ids:
            if seg is not None and code != CANCELLATION_EVENT:
                # its segment values reach the registry, as a repeat from an earlier
                # batch's do (the value registry counts every valid event's values)
                values_of(item.props)
            continue
        batch_ids.add(item.event_id)
        claim = Claim(
            digest(item.event_id), f"{src}@{m.offset}", keys.id_shard(item.event_id),
            long=code == SIGNUP_EVENT or code == CANCELLATION_EVENT,  # noqa: SIM109
        )
        # two int compares: cheaper per event than `in` a tuple
        if code == SIGNUP_EVENT or code == CANCELLATION_EVENT:  # noqa: SIM109
            kind: int | tuple[Any, ...] = SIGNUP if code == SIGNUP_EVENT else CANCELLATION
            if seg is not None and code == SIGNUP_EVENT:
                kind = (SIGNUP, *values_of(item.props))
            plan.customer.append((user, bucket, item.ts_ms, kind, day, claim))  # type: ignore[arg-type]
        elif code == SURVEY:
            answer = (item.survey, item.score)
            name = SURVEY_FIELDS.get(answer) or survey_field(*answer)  # type: ignore[arg-type]
            fld: str | tuple[str, ...] = name
            if seg is not None:
                fld = (name, SURVEY_KINDS.get(answer) or survey_kind(*answer),  # type: ignore[arg-type]
                       *values_of(item.props))
            plan.counters.append((day, fld, claim))  # type: ignore[arg-type]
        else:  # visit or conversion
            name = (VISIT_PREFIX if code == VISIT else CONVERSION_PREFIX) + campaigns.stored_name(
                item.campaign or "")
            fld = name
            if seg is not None:
                fld = (name, VISIT_KIND if code == VISIT else CONVERSION_KIND,
                       *values_of(item.props))
            plan.counters.append((day, fld, claim))  # type: ignore[arg-type]
    _note_base(out, applied, keys.shards)
    return out

"""Redis adapter: apply a batch's writes atomically with its offsets; read raw numbers.

Sync redis-py with hiredis on purpose: it built the same grouped commands ~2.5x faster
than `redis.asyncio` here. The worker calls it from a thread so the event loop keeps
fetching the next batch meanwhile.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.cluster

from .. import _compiled, campaigns, usermap
from ..figures import COHORT_DAYS, COHORT_SPAN, RawFigures, SegmentRaw
from ..keys import DAY_SECONDS, LAYOUT_VERSION, KeySpace
from ..privacy import NO_KEY, UserIdHasher
from ..segments import NONE, OTHER, Segments
from ..timebuckets import month_so_far, rolling
from ..usermap import UserTable
from ..zones import same_zone
from .scripts import Replayable, Scripts
from .wire import (
    COHORT_KIND,
    RETAINED_KIND,
    WINDOW_FIELDS,
    WINDOWS_MOVING,
    WINDOWS_READY,
    Applied,
    BatchWrites,
    CampaignWindows,
    Claim,
    IdKeys,
    OffsetMismatch,
    ShardPlan,
    Witness,
    cohort_field,
    decode_apply,
    decode_campaigns,
    decode_claims,
    decode_cohorts,
    decode_first_week,
    decode_registry,
    decode_segment_cohorts,
    encode_apply,
    encode_claims,
    is_campaign_field,
    text,
)

# When built and not turned off by STREAM_NO_EXTENSIONS (stream/_compiled.py decides).
_redisformats = _compiled.redisformats


def compiled_formats_available() -> bool:
    """Whether stream/_redisformats.c is built (else PFADDs and bit-number lists)."""
    return _redisformats is not None


#: A day's new members of a batch go to Redis as a dense HyperLogLog (12 kB, merged at
#: a fixed cost) from this many on, as PFADD members (about 14 bytes and a hash each)
#: below it: what travels to Redis, its replicas and its append-only file stays small
#: for the small batches of a quiet stream.
HLL_DENSE_MIN = 500
#: Users whose bit number a store remembers, at most: about 150 bytes each (75 MB at
#: most). Past it the older half is forgotten; a forgotten user's number is found again
#: in Redis, at two commands in the apply call and no bitmap fragment for the user, so
#: the cache should hold the users active in a few days (a worker's share of them).
NUMS_MAX = 500_000
#: Seconds a witness key (lua/apply.lua) outlives its store's last call that got
#: numbers: a week.
WITNESS_TTL = 7 * 86_400
#: Attempts at a batch whose bit numbers Redis no longer holds (each re-asks them).
STALE_ATTEMPTS = 3
#: Seconds a store reuses the segment cohorts it read (STREAM_SEGMENTS): their read costs
#: two BITOPs per cohort day and segment value, and they move only at midnight and with
#: late signups and activity.
SEGMENT_COHORT_SECONDS = 60.0


class Conflict(Exception):
    """A shard's stored offset for `src` is not what this worker expected: another worker
    moved the partition, or Redis lost its latest writes. Reload offsets and re-read."""

    def __init__(self, src: str, stored: int) -> None:
        super().__init__(f"offset of {src} in Redis is {stored}, not the expected one")
        self.src = src
        self.stored = stored


class Forgotten(Conflict):
    """Users were erased from a shard (`forget`) since this store's last apply call there:
    its cached bit numbers are dropped, and the batch must be folded again from Redis's
    offsets without the caller's caches (a skipped known (user, day) could be a forgotten
    user's)."""

    def __init__(self, shard: int) -> None:
        Exception.__init__(self, f"users were erased from shard {shard} by forget")
        self.src = ""
        self.stored = -1


class _StaleNumbers(Exception):
    """Redis no longer holds the witness of this store's cached bit numbers."""


class StoreMismatch(Exception):
    """The store in Redis was created with other fixed parameters (zone, shards...)."""


@dataclass(frozen=True, slots=True)
class StoreParams:
    """Parameters fixed for the life of a store; changing one would mix incompatible keys."""

    timezone: str
    shards: int
    buckets: int
    #: fingerprint of STREAM_USER_ID_KEY (privacy.fingerprint), never the key
    user_id_key: str = NO_KEY

    def as_meta(self) -> dict[str, str]:
        return {
            "timezone": self.timezone,
            "shards": str(self.shards),
            "buckets": str(self.buckets),
            "layout": str(LAYOUT_VERSION),
            "user_id_key": self.user_id_key,
        }


_META_SETTING = {"timezone": "STREAM_TIMEZONE", "shards": "STREAM_REDIS_SHARDS",
                 "buckets": "STREAM_USER_BUCKETS", "layout": "the store layout version",
                 "user_id_key": "STREAM_USER_ID_KEY"}
#: A store recorded before STREAM_USER_ID_KEY existed holds user ids in clear.
_META_BEFORE = {"user_id_key": NO_KEY}
#: Records the meta fields not yet set in one step, a store of an earlier version first
#: getting what it was built with (workers may start at the same moment).
_RECORD_META = """
if redis.call('HEXISTS', KEYS[1], 'layout') == 1 then
  for i = 1, #ARGV, 2 do
    if ARGV[i] == 'user_id_key' then redis.call('HSETNX', KEYS[1], ARGV[i], 'none') end
  end
end
for i = 1, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
"""


def _key_mismatch(stored: str, wanted: str) -> str:
    """One line; fingerprints only, never a key."""
    built = ("without STREAM_USER_ID_KEY (user ids in clear)" if stored == NO_KEY else
             f"with another STREAM_USER_ID_KEY (fingerprint {stored})")
    given = ("none is set" if wanted == NO_KEY else
             f"this process's key has fingerprint {wanted}")
    return (f"the Redis store was built {built} but {given}; set the store's key, or use "
            f"another STREAM_REDIS_URL or key prefix and replay the topics")


Client = redis.Redis | redis.cluster.RedisCluster


class Store:
    """The engagement store in one Redis (or one Redis Cluster)."""

    def __init__(self, client: Client, keys: KeySpace, params: StoreParams,
                 campaign_max_series: int = campaigns.DEFAULT_MAX_SERIES,
                 segments: Segments | None = None,
                 user_ids: UserIdHasher | None = None) -> None:
        self.client = client
        self.campaign_max_series = campaign_max_series
        self.keys = keys
        #: configured segment dimensions and the registry cache (None: no segments)
        self.segments = segments
        #: STREAM_USER_ID_KEY's hashing of user ids, applied before a user id is placed
        #: or stored anywhere (None: ids are stored as they come)
        self.user_ids = user_ids
        self.params = params
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        #: every Lua script this store's client runs (stream/store/scripts.py)
        self.scripts = Scripts(client)
        #: user_id -> bit number in its shard (stream/usermap.py: a compact table with
        #: the compiled parts); numbers are never reused: safe to cache
        self._nums: UserTable = usermap.new_table()
        #: shard -> the witness count of this store's latest apply call there that gave it
        #: numbers (lua/apply.lua)
        self._witness: dict[int, int] = {}
        #: shard -> the highest bit number this store was given there (about the length
        #: of that shard's activity bitmaps, in bits)
        self._top: dict[int, int] = {}
        self._token = secrets.token_hex(8)
        #: the latest segment cohorts read: (day, monotonic time, counts)
        self._seg_cohorts: tuple[int, float, dict[tuple[str, int, str, str], int]] | None = None

    # -- set-up -------------------------------------------------------------------------
    def load_scripts(self) -> None:
        """Load the Lua scripts its pipelines call (on every primary in cluster mode)."""
        self.scripts.load()

    def drop_cached_figures(self) -> None:
        """Forget the segment cohorts read less than SEGMENT_COHORT_SECONDS ago (after
        `forget` erased users, so this store's next read is exact at once; other
        processes' stores catch up within SEGMENT_COHORT_SECONDS)."""
        self._seg_cohorts = None

    def check_meta(self, record: bool = True) -> None:
        """Record this store's fixed parameters (unless not `record`: readers), or refuse
        if they differ.

        Raises StoreMismatch naming the setting, e.g. a store created in Europe/Berlin read
        with STREAM_TIMEZONE=UTC would silently shift every day boundary."""
        wanted = self.params.as_meta()
        meta = self.keys.meta
        if record:
            flat = [x for item in wanted.items() for x in item]
            self.client.eval(_RECORD_META, 1, meta, *flat)
        stored = {_s(k): _s(v) for k, v in self.client.hgetall(meta).items()}
        if "layout" in stored:
            stored = {**_META_BEFORE, **stored}
        for name, value in wanted.items():
            if name == "user_id_key" and stored.get(name, value) != value:
                raise StoreMismatch(_key_mismatch(stored[name], value))
            if stored.get(name) != value and (record or name in stored) and not (
                    name == "timezone" and same_zone(stored.get(name) or "", value)):
                raise StoreMismatch(
                    f"the Redis store was created with {_META_SETTING[name]}={stored.get(name)}"
                    f" but this process has {value}; use another STREAM_REDIS_URL or key "
                    f"prefix, or rebuild the store by replaying the topics"
                )

    # -- offsets -------------------------------------------------------------------------
    def load_offsets(self, srcs: Iterable[str]) -> dict[tuple[str, int], int]:
        """Last applied offset of each `<topic>/<partition>` in each shard (absent: none)."""
        srcs = list(srcs)
        out: dict[tuple[str, int], int] = {}
        if not srcs:
            return out
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.hmget(self.keys.offsets(shard), srcs)
        for shard, values in enumerate(pipe.execute()):
            for src, value in zip(srcs, values, strict=True):
                if value is not None:
                    out[(src, shard)] = int(value)
        return out

    def resume_offset(self, applied: Mapping[tuple[str, int], int], src: str) -> int | None:
        """Where to resume `src`: one past the lowest offset applied in every shard, or None
        when no shard has applied anything of it yet."""
        values = [applied.get((src, s)) for s in range(self.keys.shards)]
        if all(v is None for v in values):
            return None
        return min(-1 if v is None else v for v in values) + 1

    # -- writes ----------------------------------------------------------------------------
    def apply(
        self, writes: BatchWrites, applied: Mapping[tuple[str, int], int], today: int
    ) -> int:
        """Apply one batch. Returns the number of id-carrying events applied.

        Order matters:
        1. with more than one shard, the claims of every id of the batch, in message order
           and in the shard that remembers the id, so the apply calls know which events
           are duplicates;
        2. one pipeline: the PFADDs (idempotent, any order), then one apply call per shard,
           each atomic with that shard's offsets. A crash between shards is safe: the shards
           that applied skip the redelivery by offset, the others apply it.
        Raises Conflict when a shard's stored offset is not the one the writes were folded
        against (`writes.base`; `applied`'s for writes that do not say)."""
        keys = self.keys
        id_params = IdKeys(*keys.id_generations(today)).as_plan()
        if keys.shards > 1:
            self._claim_elsewhere(writes, id_params)
        pending = list(range(keys.shards))
        count = 0
        if len(self._nums) > NUMS_MAX:
            usermap.keep_newest(self._nums, len(self._nums) // 2)  # the newer half
        for attempt in range(STALE_ATTEMPTS):
            pipe = Replayable(self.client)
            if attempt == 0 and writes.hll:
                self._queue_hll(pipe, writes.hll)
            if attempt == 0 and self.segments:
                self._segment_writes(writes, pipe, self.segments)
            for shard in pending:
                self.scripts.queue(pipe, "apply", keys.offsets(shard),
                         *self._shard_args(writes, shard, applied, id_params))
            results = self._execute(pipe)
            stale = []
            conflict: Conflict | None = None
            forgotten = -1
            for shard, result in zip(pending, results[len(results) - len(pending):],
                                     strict=True):
                reply = decode_apply(result)
                if isinstance(reply, OffsetMismatch):
                    conflict = Conflict(reply.src, reply.stored)
                elif isinstance(reply, Applied):
                    count += reply.events
                    if reply.witness >= 0:
                        self._witness[shard] = reply.witness
                        top = usermap.add_flat(self._nums, reply.given)
                        if top > self._top.get(shard, -1):
                            self._top[shard] = top
                else:
                    stale.append(shard)
                    if reply.forgotten:
                        forgotten = shard
            if conflict is not None:
                raise conflict
            if forgotten >= 0:
                self._forget_numbers()
                raise Forgotten(forgotten)
            if not stale:
                return count
            # Redis lost writes (restarted from an older file, or a lagging replica took
            # over): the numbers cached here may now be given to other users. Forget them
            # and ask again; the shards that applied are done.
            self._forget_numbers()
            pending = stale
        raise _StaleNumbers(f"shards {pending}: bit numbers still stale after "
                            f"{STALE_ATTEMPTS} attempts")

    def _queue_hll(self, pipe: Replayable, hll: Mapping[int, set[str]]) -> None:
        """Queue the batch's daily HyperLogLog adds: a day of at least HLL_DENSE_MIN
        members as a dense HyperLogLog merged by lua/hll.lua (Redis then hashes nothing),
        a smaller one (or all without the compiled formats) as a PFADD."""
        keys = self.keys
        flat: list[Any] = []
        for day, members in hll.items():
            key, expire_at = keys.dau(day), keys.day_expire_at(day)
            if _redisformats is not None and len(members) >= HLL_DENSE_MIN:
                flat += (key, expire_at, _redisformats.hll_dense(members))
            else:
                pipe.pfadd(key, *members)
                pipe.expireat(key, expire_at)
        if flat:
            self.scripts.queue(pipe, "hll", keys.scratch(), *flat)

    def _forget_numbers(self) -> None:
        self._nums.clear()
        self._witness.clear()
        self._top.clear()

    def _shard_args(self, writes: BatchWrites, shard: int,
                    applied: Mapping[tuple[str, int], int], id_params: dict[str, Any]
                    ) -> list[bytes]:
        o: list[Any] = []
        for src, last in writes.last_offset.items():
            # A shard may already be past this batch (an earlier run crashed between
            # shards): its offset must never move back, or the messages between would be
            # applied twice on the next batch.
            # The offset the fold skipped against, when it says (see BatchWrites.base): the
            # caller's `applied` may have moved since the fold, and writes compared against
            # another offset than their own would apply messages twice, or lose some.
            expected = writes.base.get((src, shard))
            if expected is None:
                expected = applied.get((src, shard), -1)
            o += (src, expected, max(expected, last))
        plan = writes.shards.get(shard) or ShardPlan()
        witness = Witness(self._token, self._witness.get(shard, -1), WITNESS_TTL).as_plan()
        return encode_apply(plan, self.keys.tag(shard), o, {**id_params, **witness},
                            self.keys.retention_days, self.keys.bitmap_days, self._nums,
                            self.keys.user_shard_bucket, self._top.get(shard, -1),
                            self.segments or None)

    def _segment_writes(self, writes: BatchWrites, pipe: Replayable, seg: Segments) -> None:
        """Resolve the batch's unknown segment values in the registry (first values win),
        then queue the per-segment PFADDs."""
        if writes.pending:
            seg.resolve(writes.pending, self._register)
        keys = self.keys
        merged: dict[str, tuple[int, set[str]]] = {}
        for (i, v, day), members in writes.shll.items():
            if writes.pending:
                v = seg.lookup(i, v) or v
            key = keys.sdau(seg.dims[i], v, day)
            if key in merged:
                merged[key][1].update(members)
            else:
                merged[key] = (day, members)
        for key, (day, members) in merged.items():
            pipe.pfadd(key, *members)
            pipe.expireat(key, keys.day_expire_at(day))
        writes.pending.clear()  # every value in the plans is a segment value from now on

    def _register(self, dims: list[str], max_values: int, flat: list[str]) -> list[list[str]]:
        """Run lua/segments.lua: register values while each dimension has room."""
        index = {d: str(n + 1) for n, d in enumerate(dims)}
        args: list[Any] = [max_values]
        for j in range(0, len(flat), 2):
            args += (index[flat[j]], flat[j + 1])
        result = self.scripts.call("segments", [self.keys.seg_registry(d) for d in dims],
                                   *args)
        return decode_registry(result)

    def _claim_elsewhere(self, writes: BatchWrites, id_params: dict[str, Any]) -> None:
        """Phase 1 with more than one shard: claim every id of the batch in the shard that
        remembers it, in message order, before any apply call.

        Every id, not only those living in another shard than their user: a duplicate
        whose id is claimed here must not overtake an earlier message whose id would have
        been claimed later, inside its own shard's apply call (the later one would win).
        Order matters for the same reason: the first message with an id wins."""
        # Pre-claimed ones come from an earlier attempt at this batch (a retry after a
        # transient error): claimed then, for this very message.
        claims = [op[5] for plan in writes.shards.values() for op in plan.customer
                  if op[5] is not _PRECLAIMED]
        claims += [cop[2] for plan in writes.shards.values() for cop in plan.counters
                   if cop[2] is not _PRECLAIMED]
        if not claims:
            return
        claims.sort(key=_message_order)
        by_shard: dict[int, list[Claim]] = {}
        for c in claims:
            by_shard.setdefault(c.shard, []).append(c)
        pipe = Replayable(self.client)
        order = list(by_shard.items())
        for shard, claims in order:
            body = encode_claims(self.keys.tag(shard), claims, id_params)
            self.scripts.queue(pipe, "claim", self.keys.offsets(shard), body)
        verdicts: dict[int, bool] = {}
        for (_, claims), result in zip(order, self._execute(pipe), strict=True):
            for c, v in zip(claims, decode_claims(result), strict=True):
                verdicts[id(c)] = v
        for plan in writes.shards.values():
            plan.customer = [(*op[:5], _PRECLAIMED) for op in plan.customer
                             if op[5] is _PRECLAIMED or verdicts[id(op[5])]]
            plan.counters = [(cop[0], cop[1], _PRECLAIMED) for cop in plan.counters
                             if cop[2] is _PRECLAIMED or verdicts[id(cop[2])]]

    def _execute(self, pipe: Replayable) -> list[Any]:
        """Run a pipeline, reloading the scripts on NOSCRIPT (Scripts.execute)."""
        return self.scripts.execute(pipe)

    # -- reads -------------------------------------------------------------------------------
    def read(self, today: int, previous: bool = False) -> RawFigures:
        """The raw numbers behind every figure, as of the end of local day `today`; with
        `previous`, also those of the day before (`raw.previous`), from the same reads."""
        k = self.keys
        window = list(rolling(today, 30))
        prev_window = list(rolling(today - 1, 30))
        # per-day counters of today - 30 too when the day before's window is wanted
        days_read = [today - 30, *window] if previous else window
        if not self.scripts.loaded:
            self.load_scripts()
        pipe = Replayable(self.client)
        # execute_command: RedisCluster's pipeline blocks its pfcount/evalsha methods
        # (multi-key), but routes the raw commands by key, all in the {h} slot here.
        unions = [[today], rolling(today, 7), window, month_so_far(today), [today - 1],
                  prev_window]
        if previous:
            unions += [rolling(today - 1, 7), month_so_far(today - 1)]
        for days in unions:
            pipe.execute_command("PFCOUNT", *[k.dau(d) for d in days])
        for shard in range(k.shards):
            pipe.hgetall(k.cust(shard))
            pipe.hgetall(k.totals(shard))
            for d in days_read:
                pipe.hmget(k.counters(shard, d), *WINDOW_FIELDS)
        for shard in range(k.shards):
            self.scripts.queue(pipe, "firstweek", k.offsets(shard), k.tag(shard), today)
        pipe.hgetall(k.scan)
        for shard in range(k.shards):
            self.scripts.queue(pipe, "cohort", k.offsets(shard), k.tag(shard), today)
        res = self._execute(pipe)
        cohorts = _cohort_counts(res[len(res) - k.shards:], today, k.bitmap_days)
        del res[len(res) - k.shards:]
        scan = {_s(f): _s(v) for f, v in res.pop().items()}
        first_week = [0, 0, 0, 0]
        for reply in res[len(res) - k.shards:]:
            for j, c in enumerate(decode_first_week(reply)):
                first_week[j] += c
        del res[len(res) - k.shards:]
        for j, day in ((0, today), (2, today - 1)):
            # a cohort older than the bitmaps kept: left out, rather than undercounted
            if time.time() >= (day - 37 + k.bitmap_days + 2) * DAY_SECONDS:
                first_week[j:j + 2] = [0, 0]
        raw = RawFigures(
            today=today, dau=res[0], wau=res[1], mau=res[2], calendar_mau=res[3],
            prev_dau=res[4], prev_mau=res[5], first_week=(first_week[0], first_week[1]),
        )
        if previous:
            raw.previous = RawFigures(today=today - 1, dau=res[4], wau=res[6], mau=res[5],
                                      calendar_mau=res[7], diffs=raw.diffs,
                                      first_week=(first_week[2], first_week[3]))
        i = len(unions)
        for _ in range(k.shards):
            _add_into(raw.diffs, res[i])
            _add_into(raw.totals, res[i + 1])
            for j, d in enumerate(days_read):
                if d >= window[0]:
                    _add_into(raw.window_counters, _window_fields(res[i + 2 + j]))
                if raw.previous is not None and d <= today - 1:
                    _add_into(raw.previous.window_counters, _window_fields(res[i + 2 + j]))
            i += 2 + len(days_read)
        raw.scan = scan
        self._read_campaigns(raw, days_read)
        raw.cohorts = cohorts[today]
        if raw.previous is not None:
            raw.previous.cohorts = cohorts[today - 1]
        if self.segments:
            raw.segments = self._read_segments(today, self.segments)
        return raw

    def _read_campaigns(self, raw: RawFigures, days_read: list[int]) -> None:
        """Add the campaigns' visits and conversions to the window counters of `raw` (and
        of `raw.previous`): the top campaigns of lua/campaigns.lua's rolling windows, and
        the sums of the rest as `v:other`, `c:other`. So a read costs O(max series) however
        many campaign names the stream carries. For a day the windows are already past (a
        past day, or a clock behind another worker's), the per-day counters are summed
        instead, every campaign of them."""
        k = self.keys
        today = raw.today
        raw.campaign_max_series = self.campaign_max_series
        if raw.previous is not None:
            raw.previous.campaign_max_series = self.campaign_max_series
        results = [CampaignWindows(WINDOWS_MOVING)] * k.shards
        while any(r.status == WINDOWS_MOVING for r in results):  # a day per call
            pending = [shard for shard, r in enumerate(results) if r.status == WINDOWS_MOVING]
            pipe = Replayable(self.client)
            for shard in pending:
                self.scripts.queue(pipe, "campaigns", k.offsets(shard), k.tag(shard), today,
                         self.campaign_max_series)
            for shard, r in zip(pending, self._execute(pipe), strict=True):
                results[shard] = decode_campaigns(r)
        if all(r.status == WINDOWS_READY for r in results):
            for r in results:
                assert r.today is not None and r.previous is not None
                r.today.add_into(raw.window_counters, campaigns.OTHER)
                if raw.previous is not None:
                    r.previous.add_into(raw.previous.window_counters, campaigns.OTHER)
            return
        pipe = Replayable(self.client)
        for shard in range(k.shards):
            for d in days_read:
                pipe.hgetall(k.counters(shard, d))
        res = iter(self._execute(pipe))
        for _ in range(k.shards):
            for d in days_read:
                fields = {f: v for f, v in next(res).items() if is_campaign_field(_s(f))}
                if d > today - 30:
                    _add_into(raw.window_counters, fields)
                if raw.previous is not None and d <= today - 1:
                    _add_into(raw.previous.window_counters, fields)

    def _read_segments(self, today: int, seg: Segments) -> SegmentRaw:
        """The raw numbers behind the segment figures (two round trips: the registries,
        then the counts)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for dim in seg.dims:
            pipe.smembers(k.seg_registry(dim))
        values = {dim: sorted({_s(m) for m in members} | {NONE, OTHER})
                  for dim, members in zip(seg.dims, pipe.execute(), strict=True)}
        window = list(rolling(today, 30))
        spans = ([today], rolling(today, 7), window)
        pipe = self.client.pipeline(transaction=False)
        pairs = [(dim, v) for dim in seg.dims for v in values[dim]]
        for dim, v in pairs:
            for days in spans:
                pipe.execute_command("PFCOUNT", *[k.sdau(dim, v, d) for d in days])
        for shard in range(k.shards):
            pipe.hgetall(k.scust(shard))
            for d in window:
                pipe.hgetall(k.scounters(shard, d))
        # Segment cohorts cost two GETBITs per cohort member: read at most every
        # SEGMENT_COHORT_SECONDS (they move only with late signups and activity).
        cached = self._seg_cohorts
        fresh = (cached is not None and cached[0] == today
                 and time.monotonic() - cached[1] < SEGMENT_COHORT_SECONDS)
        if not fresh:
            for shard in range(k.shards):
                self.scripts.queue(pipe, "cohort", k.offsets(shard), k.tag(shard), today,
                         "segments")
        res = pipe.execute()
        out = SegmentRaw(values=values)
        if cached is not None and fresh:
            out.cohorts = dict(cached[2])
        else:
            for reply in res[len(res) - k.shards:]:
                _segment_cohorts(out.cohorts, reply, set(seg.dims), today, k.bitmap_days)
            del res[len(res) - k.shards:]
            self._seg_cohorts = (today, time.monotonic(), dict(out.cohorts))
        for j, pair in enumerate(pairs):
            out.dau[pair], out.wau[pair], out.mau[pair] = (int(x) for x in res[3 * j:3 * j + 3])
        for i in range(3 * len(pairs), len(res), 1 + len(window)):
            _add_into(out.diffs, res[i])
            for j in range(len(window)):
                _add_into(out.window_counters, res[i + 1 + j])
        return out

    def ping(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
        self.client.close()


_PRECLAIMED = Claim("", "", -1, False)


def _message_order(claim: Claim) -> tuple[str, int]:
    """(src, offset) of the message a claim belongs to: Kafka's order in a partition."""
    src, _, offset = claim.origin.rpartition("@")
    return src, int(offset)


def _window_fields(values: list[Any]) -> dict[str, Any]:
    """An HMGET reply of WINDOW_FIELDS as a hash of the fields present."""
    return {f: v for f, v in zip(WINDOW_FIELDS, values, strict=True) if v is not None}


def _cohort_kept(t: int, n: int, bitmap_days: int) -> bool:
    """Whether the signup bitmaps of the day-`n` cohort as of day `t` are all still kept
    (a cohort partly expired is left out rather than undercounted)."""
    oldest = t - 1 - n - (COHORT_SPAN - 1)
    return time.time() < (oldest + bitmap_days + 2) * DAY_SECONDS


def _cohort_counts(replies: list[Any], today: int, bitmap_days: int) -> dict[int, dict[str, int]]:
    """lua/cohort.lua's replies of every shard summed: day -> `c:<N>`/`r:<N>` -> users,
    for today and the day before."""
    out: dict[int, dict[str, int]] = {today: {}, today - 1: {}}
    for reply in replies:
        for t, counts in zip((today, today - 1), decode_cohorts(reply, COHORT_DAYS),
                             strict=True):
            for n, count in zip(COHORT_DAYS, counts, strict=True):
                if _cohort_kept(t, n, bitmap_days):
                    into = out[t]
                    c, r = cohort_field(COHORT_KIND, n), cohort_field(RETAINED_KIND, n)
                    into[c] = into.get(c, 0) + count.cohort
                    into[r] = into.get(r, 0) + count.retained
    return out


def _segment_cohorts(into: dict[tuple[str, int, str, str], int], reply: list[Any],
                     dims: set[str], today: int, bitmap_days: int) -> None:
    """Adds one shard's lua/cohort.lua reply with segments to `into`, for the configured
    dimensions."""
    for row in decode_segment_cohorts(reply):
        if row.dim in dims and _cohort_kept(today, row.n, bitmap_days):
            for kind, x in ((COHORT_KIND, row.cohort), (RETAINED_KIND, row.retained)):
                key = (kind, row.n, row.dim, row.value)
                into[key] = into.get(key, 0) + x


def _add_into(into: dict[str, int], values: Mapping[Any, Any]) -> None:
    for key, value in values.items():
        name = _s(key)
        into[name] = into.get(name, 0) + int(value)


_s = text


def connect(url: str, cluster: bool, sentinels: Sequence[tuple[str, int]] = (),
            master: str = "", sentinel_password: str | None = None, **options: Any) -> Client:
    """A Redis client for `url` (redis:// or rediss://); RedisCluster when `cluster`; with
    `sentinels`, the master named `master` that they point at (the URL then gives only
    the password, database and TLS options)."""
    common: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5,
                              "health_check_interval": 15, **options}
    if cluster:
        # (RedisCluster passes its nodes only the options it knows: no packer)
        return redis.cluster.RedisCluster.from_url(url, **common)
    if _redisformats is not None and redis.utils.HIREDIS_AVAILABLE:
        common["command_packer"] = CompiledPacker()
    if sentinels:
        return _sentinel_master(url, sentinels, master, sentinel_password, common)
    return redis.Redis.from_url(url, **common)


class CompiledPacker:
    """redis-py's command packer (a connection's `command_packer` option), the compiled
    way: `_redisformats.pack_command` writes the commands of bytes, str and int
    arguments, which are all the store sends on the hot path (a batch spread over many
    days sends about one PFADD member per event: 15 ns each here, against about 290 ns
    through redis-py's packer); any other command goes to redis-py's own packer."""

    def __init__(self) -> None:
        self._own = redis.connection.HiredisRespSerializer()

    def pack(self, *args: Any) -> list[bytes]:
        assert _redisformats is not None
        packed: bytes | None = _redisformats.pack_command(args)
        if packed is None:
            own: list[bytes] = self._own.pack(*args)
            return own
        return [packed]


def _sentinel_master(url: str, sentinels: Sequence[tuple[str, int]], master: str,
                     password: str | None, common: dict[str, Any]) -> redis.Redis:
    """redis-py's own Sentinel support: a client whose connections ask the sentinels for
    the current master, and find the new one after a failover (the worker meanwhile sees
    connection or read-only errors, which it waits out)."""
    from redis.sentinel import Sentinel

    parsed: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    kwargs = {k: v for k, v in parsed.items()
              if k not in ("host", "port", "path", "connection_class")}
    if url.startswith("rediss://"):
        kwargs["ssl"] = True  # SentinelManagedSSLConnection, with the URL's ssl_* options
    sentinel_kwargs = {"socket_timeout": common["socket_connect_timeout"],
                       "socket_connect_timeout": common["socket_connect_timeout"]}
    if password is not None:
        sentinel_kwargs["password"] = password
    sentinel = Sentinel(list(sentinels),  # type: ignore[no-untyped-call]
                        sentinel_kwargs=sentinel_kwargs)
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, **{**common, **kwargs})
    return client

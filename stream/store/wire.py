"""The wire format between the fold and the Lua scripts, in one pure module (no redis).

Three parts, each written and read only here:
- the typed operations a batch implies (`Claim`, `ShardPlan`, `BatchWrites`), which the
  fold (stream/fold.py) builds;
- the counter-field grammar: the names of the fields of the totals hash (`e:<type>`,
  `dl:<reason>`, `ig:<reason>`, `late:<age>`, `fu`, `oor:...`), of the per-day counters
  (`v:<campaign>`, `c:<campaign>`, `<survey>:<score>`), of the segment counters
  (`s:<kind>:<dimension>:<value>`), the segment churn difference arrays and the cohort
  counts, with the parsers the figures read them back with;
- the encoding of a batch's writes into script arguments (`encode_apply`,
  `encode_claims`; the plan map's keys are the PLAN_* constants below) and the decoding
  of script replies into small named records (`decode_apply`, `decode_claims`,
  `decode_campaigns`, `decode_cohorts`, `decode_segment_cohorts`, `decode_first_week`).

The fold's hot path builds fields from the precomputed tuples and dicts here
(TYPE_FIELDS, LATE_FIELDS, SURVEY_FIELDS...), never through a function call per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import msgspec

from .. import _compiled, campaigns
from ..events import EVENT_TYPES, SURVEY_RANGES
from ..usermap import UserTable, split_known

if TYPE_CHECKING:
    from ..decode import Message
    from ..segments import Segments

_encode = msgspec.msgpack.Encoder().encode

# When built and not turned off by STREAM_NO_EXTENSIONS (stream/_compiled.py decides).
_redisformats = _compiled.redisformats

#: A day's known numbers go to the apply script as a bitmap fragment ORed in (one BITOP
#: over the whole bitmap) rather than one BITFIELD sub-command per user when the bitmap
#: is at most this many bytes per user of the batch: a list costs about 8 bytes and a
#: sub-command per user, BITOP about a microsecond per 10 kB. So a fragment is cheaper
#: for Redis up to thousands of bytes per user; 128 lets the few hundred users per day
#: of a batch whose event times spread over a month (200k users: a 25 kB bitmap) take
#: it, at up to 16x the bytes of a list for that day to Redis, its replicas and its
#: append-only file.
FRAGMENT_BYTES_PER_USER = 128

# -- the counter-field grammar --------------------------------------------------------

#: Kinds of customer events in `ShardPlan.customer` and the apply script's `c` list.
SIGNUP: Final = 0
CANCELLATION: Final = 1

# Totals hash (`tot`), all-time counters.
#: `e:<type>`: events applied, by type
TYPE_PREFIX: Final = "e:"
#: `dl:<reason>`: dead letters, by reason
DEAD_LETTER_PREFIX: Final = "dl:"
#: `ig:<reason>`: ignored messages, by reason
IGNORED_PREFIX: Final = "ig:"
#: `late:<age>`: events applied after their day, by age bucket (LATE_AGES)
LATE_PREFIX: Final = "late:"
#: users erased by `forget` (written by lua/forget.lua)
FORGOTTEN_FIELD: Final = "fu"
#: `oor:skipped:<topic>`: messages skipped because they left the log before they were
#: read; `oor:restarts:<topic>`: partitions restarted from their log start
#: (lua/offsets.lua, stream/kafka/offsetrange.py)
SKIPPED_PREFIX: Final = "oor:skipped:"
RESTARTS_PREFIX: Final = "oor:restarts:"

#: Age buckets of late events, by whole local days between the event's day and today.
LATE_AGES: tuple[str, ...] = ("1d", "2-7d", "8-30d", "31d+")


def late_age(age: int) -> str | None:
    """The age bucket of an event dated `age` days before today (None: not late)."""
    if age < 1:
        return None
    if age == 1:
        return "1d"
    if age <= 7:
        return "2-7d"
    if age <= 30:
        return "8-30d"
    return "31d+"


def type_field(event_type: str) -> str:
    return TYPE_PREFIX + event_type


def dead_letter_field(reason: str) -> str:
    return DEAD_LETTER_PREFIX + reason


def ignored_field(reason: str) -> str:
    return IGNORED_PREFIX + reason


def late_field(age_bucket: str) -> str:
    return LATE_PREFIX + age_bucket


#: The `e:` field of each event type, by its type code (the index in EVENT_TYPES).
TYPE_FIELDS: tuple[str, ...] = tuple(type_field(name) for name in EVENT_TYPES)
#: Totals field of an event folded `age` days after its day (index min(age, 31)): the
#: late-events counter goes through the totals map, atomic with the offsets like `e:`.
LATE_FIELDS: tuple[str, ...] = tuple(LATE_PREFIX + (late_age(a) or "") for a in range(32))
#: The `late:` fields in LATE_AGES order (the compiled fold's bucket order).
LATE_BUCKET_FIELDS: tuple[str, ...] = tuple(late_field(a) for a in LATE_AGES)

# Per-day counters (`cnt:<day>`), and the campaign windows of lua/campaigns.lua.
#: `v:<campaign>`: visits (a name longer than campaigns.NAME_MAX as `other`)
VISIT_PREFIX: Final = "v:"
#: `c:<campaign>`: conversions
CONVERSION_PREFIX: Final = "c:"
#: `<survey>:<score>`: answers of a survey (`nps:9`, `csat:4`)
SURVEY_SEPARATOR: Final = ":"


def visit_field(campaign: str) -> str:
    return VISIT_PREFIX + campaign


def conversion_field(campaign: str) -> str:
    return CONVERSION_PREFIX + campaign


def survey_field(survey: str, score: int) -> str:
    return f"{survey}{SURVEY_SEPARATOR}{score}"


#: (survey, score) -> its counter field, for every valid answer.
SURVEY_FIELDS: Mapping[tuple[str, int], str] = {
    (s, n): survey_field(s, n) for s, (low, high) in SURVEY_RANGES.items()
    for n in range(low, high + 1)}
#: The survey fields a figure read asks for by name (a `cnt:` hash holds every
#: campaign too): NPS 0-10 and CSAT 1-5.
WINDOW_FIELDS: tuple[str, ...] = tuple(SURVEY_FIELDS.values())


class CounterField(NamedTuple):
    """A per-day counter field read back: `kind` is `v`, `c` or a survey name; `key`
    the campaign, or the score as text."""

    kind: str
    key: str


def parse_counter(name: str) -> CounterField:
    """`v:<campaign>`, `c:<campaign>`, `<survey>:<score>` -> (kind, key)."""
    kind, _, key = name.partition(":")
    return CounterField(kind, key)


VISIT_KIND: Final = VISIT_PREFIX[:-1]
CONVERSION_KIND: Final = CONVERSION_PREFIX[:-1]


def is_campaign_field(name: str) -> bool:
    """Whether a per-day counter field is a campaign's (`v:` or `c:`)."""
    return name[:2] in (VISIT_PREFIX, CONVERSION_PREFIX)


# Segment counters (`scnt:<day>`): `s:<kind>:<dimension>:<value>`, kind `v`, `c` or
# `<survey><score>` (`nps9`).
SEGMENT_PREFIX: Final = "s:"


def survey_kind(survey: str, score: int) -> str:
    return f"{survey}{score}"


#: (survey, score) -> its segment counter kind, for every valid answer.
SURVEY_KINDS: Mapping[tuple[str, int], str] = {
    (s, n): survey_kind(s, n) for s, (low, high) in SURVEY_RANGES.items()
    for n in range(low, high + 1)}


def segment_field(kind: str, dim: str, value: str) -> str:
    return f"{SEGMENT_PREFIX}{kind}:{dim}:{value}"


class SegmentField(NamedTuple):
    kind: str
    dim: str
    value: str


def parse_segment_field(name: str) -> SegmentField:
    """`s:<kind>:<dimension>:<value>` -> (kind, dimension, value); the value may hold ':'."""
    _, kind, dim, value = name.split(":", 3)
    return SegmentField(kind, dim, value)


# Churn difference arrays (`cust`: `D:<day>`, `N:<day>`; `scust`:
# `sD:<dimension>:<value>:<day>`, `sN:...`), written by lua/_churn.lua: D counts the
# customers at 00:00 of a window's first day, N those of them who cancelled within it.
CUSTOMERS_DIFF: Final = "D"
CHURNED_DIFF: Final = "N"
SEGMENT_CUSTOMERS_DIFF: Final = "s" + CUSTOMERS_DIFF
SEGMENT_CHURNED_DIFF: Final = "s" + CHURNED_DIFF


class SegmentDiff(NamedTuple):
    kind: str
    dim: str
    value: str
    day: int


def parse_segment_diff(name: str) -> SegmentDiff:
    """`sD:<dimension>:<value>:<day>` -> (kind, dimension, value, day)."""
    head, _, day = name.rpartition(":")
    kind, dim, value = head.split(":", 2)
    return SegmentDiff(kind, dim, value, int(day))


# Signup cohorts (decoded from lua/cohort.lua): `c:<N>` cohort size, `r:<N>` retained.
COHORT_KIND: Final = "c"
RETAINED_KIND: Final = "r"


def cohort_field(kind: str, n: int) -> str:
    return f"{kind}:{n}"


def parse_cohort_field(name: str) -> tuple[str, int]:
    kind, _, n = name.partition(":")
    return kind, int(n)


# The user scan's hash (`P:scan`, stream/store/scan.py): `today` (the day scanned),
# `at` (unix time), `seconds` (Redis time), and per day offset o (0 today, 1 yesterday)
# `<o>:d7:<k>`, `<o>:d30:<k>` users active on exactly k of the 7 or 30 days,
# `<o>:lc:<state>` users in each lifecycle state.
SCAN_TODAY: Final = "today"
SCAN_AT: Final = "at"
SCAN_SECONDS: Final = "seconds"


def days_active_field(offset: int, days: int, k: int) -> str:
    return f"{offset}:d{days}:{k}"


def lifecycle_field(offset: int, state: str) -> str:
    return f"{offset}:lc:{state}"


def lua_prelude() -> str:
    """Lines every Lua script starts with (stream/store/scripts.py): the grammar's names
    the scripts use, in a table `F`, so no script spells a field this module spells."""
    names = {"visit": VISIT_PREFIX, "conversion": CONVERSION_PREFIX,
             "forgotten": FORGOTTEN_FIELD, "other_campaign": campaigns.OTHER,
             "customers": CUSTOMERS_DIFF + ":", "churned": CHURNED_DIFF + ":",
             "seg_customers": SEGMENT_CUSTOMERS_DIFF + ":",
             "seg_churned": SEGMENT_CHURNED_DIFF + ":"}
    items = ", ".join(f"{k} = '{v}'" for k, v in names.items())
    return (f"-- counter fields (stream/store/wire.py)\nlocal F = {{{items}, "
            f"campaign_name_max = {campaigns.NAME_MAX}}}\n")


# -- the typed operations of a batch ---------------------------------------------------

@dataclass(slots=True)
class Claim:
    """An event id to remember: `digest` is `digest(event_id)`; `origin` is
    `<src>@<offset>`, so a redelivery of the same message is recognised as itself while a
    different message with the same id is a duplicate. `shard` is where the id lives."""

    digest: str
    origin: str
    shard: int
    long: bool


@dataclass(slots=True)
class ShardPlan:
    """Exact writes for one shard, applied by lua/apply.lua in one atomic call.

    - `totals`: field of the totals hash -> increment (`e:<type>`, `dl:<reason>`,
      `ig:<reason>`, `late:<age>`)
    - `activity`: day -> users newly active that day in this batch (each once), for the
      day's activity bitmap
    - `customer`: (user_id, bucket, ts_ms, kind, day, claim); with segments a signup's
      kind is `(SIGNUP, value of each dimension...)`
    - `counters`: (day, field, claim) with field `v:`/`c:` + campaign (`other` for a name
      longer than campaigns.NAME_MAX), `nps:`/`csat:` + score;
      with segments `(field, kind, value of each dimension...)` with kind `v`, `c`,
      `nps<score>` or `csat<score>`
    """

    totals: dict[str, int] = field(default_factory=dict)
    activity: dict[int, list[str]] = field(default_factory=dict)
    customer: list[tuple[str, int, int, int, int, Claim]] = field(default_factory=list)
    counters: list[tuple[int, str, Claim]] = field(default_factory=list)


@dataclass(slots=True)
class BatchWrites:
    """Everything one batch writes. `hll` maps day -> user ids active that day;
    `new_days` maps user_id -> the latest day recorded for the user, to remember once
    applied (the caller's `seen`);
    `dead` lists the messages to dead-letter; `last_offset` maps src -> highest offset.
    With segments: `shll` maps (dimension index, value, day) -> user ids active that day;
    `pending` lists (dimension index, raw value) pairs the registry must decide, in the
    order met (their raw value stands for the segment value until the store resolves it)."""

    hll: dict[int, set[str]] = field(default_factory=dict)
    shll: dict[tuple[int, str, int], set[str]] = field(default_factory=dict)
    pending: dict[tuple[int, str], None] = field(default_factory=dict)
    shards: dict[int, ShardPlan] = field(default_factory=dict)
    new_days: dict[str, int] = field(default_factory=dict)
    dead: list[Message] = field(default_factory=list)
    last_offset: dict[str, int] = field(default_factory=dict)
    folded: int = 0
    #: (src, shard) -> the offset of `src` the fold took as already applied in `shard`
    #: (-1: none), for every src of `last_offset`: the writes are right only on top of
    #: exactly these, so the store compares them, not the caller's offsets at apply time
    #: (which may have moved since the fold: a batch folded ahead, a seek).
    base: dict[tuple[str, int], int] = field(default_factory=dict)


# -- script arguments --------------------------------------------------------------------
# The plan map: ARGV[1] of lua/apply.lua (msgpack), and of lua/claim.lua (PLAN_TAG,
# PLAN_CLAIMS and the id keys only). Flat lists have fixed strides; numbers of users go
# as decimal strings (Redis would format a Lua number for every call).

#: key prefix of the shard, e.g. "es:{es0}:" (KeySpace.tag)
PLAN_TAG: Final = "t"
#: flat list: src, expected offset (-1 = none), new offset, ...
PLAN_OFFSETS: Final = "o"
#: map totals field -> increment
PLAN_TOTALS: Final = "e"
#: flat list: day, {bit numbers of the users newly active that day}, ...
PLAN_BITS: Final = "b"
#: flat list: day, first byte, i, ...: ARGV[i] is a bitmap fragment (the bytes from the
#: first byte on, with the bits of more users newly active that day set; in ARGV as
#: msgpack here would turn bytes into a type cmsgpack does not read)
PLAN_FRAGMENTS: Final = "bf"
#: flat list: day, {users newly active that day whose number the caller lacks}, ...
PLAN_BITS_UNNUMBERED: Final = "bu"
#: flat list: bucket, user, ... of every active user the caller has no number for (a
#: signup's user without one is numbered by the script once its event is claimed)
PLAN_ASK: Final = "u"
#: flat list, stride CUSTOMER_STRIDE: user, bucket, ts_ms, kind, day, bit number (''
#: when the caller has none), digest, origin (customer events)
PLAN_CUSTOMER: Final = "c"
CUSTOMER_STRIDE: Final = 8
#: flat list, stride COUNTER_STRIDE: day, field, digest, origin (per-day counters)
PLAN_COUNTERS: Final = "n"
COUNTER_STRIDE: Final = 4
#: flat list, stride CLAIM_STRIDE (lua/claim.lua): digest, origin, long (0/1)
PLAN_CLAIMS: Final = "c"
CLAIM_STRIDE: Final = 3
#: the caller's witness token, its expected count (-1: no number cached) and seconds
#: the witness outlives the caller's last call
PLAN_WITNESS: Final = "w"
PLAN_WITNESS_COUNT: Final = "wc"
PLAN_WITNESS_TTL: Final = "wt"
#: id-key suffixes to look in; short / long id key to write; their expiry
PLAN_ID_LOOK: Final = "il"
PLAN_ID_SHORT: Final = "ws"
PLAN_ID_LONG: Final = "wl"
PLAN_ID_SHORT_EXPIRY: Final = "xs"
PLAN_ID_LONG_EXPIRY: Final = "xl"
#: retention days of per-day keys; days the activity and signup bitmaps are kept
PLAN_RETENTION: Final = "r"
PLAN_BITMAP_DAYS: Final = "bd"
#: with segments only: per customer event, its segment values (dimension -> value;
#: empty for a cancellation); counter fields are then lists {field, segment field...}
PLAN_CUSTOMER_SEGMENTS: Final = "cs"
#: with segments only: the dimensions
PLAN_SEGMENT_DIMS: Final = "sd"


class IdKeys(NamedTuple):
    """Where event ids are remembered as of a day (KeySpace.id_generations)."""

    look: list[str]
    short: str
    long: str
    short_expiry: int
    long_expiry: int

    def as_plan(self) -> dict[str, Any]:
        return {PLAN_ID_LOOK: self.look, PLAN_ID_SHORT: self.short, PLAN_ID_LONG: self.long,
                PLAN_ID_SHORT_EXPIRY: self.short_expiry,
                PLAN_ID_LONG_EXPIRY: self.long_expiry}


class Witness(NamedTuple):
    """The caller's witness of its cached bit numbers (lua/apply.lua)."""

    token: str
    expected: int
    ttl: int

    def as_plan(self) -> dict[str, Any]:
        return {PLAN_WITNESS: self.token, PLAN_WITNESS_COUNT: self.expected,
                PLAN_WITNESS_TTL: self.ttl}


def encode_apply(
    plan: ShardPlan, tag: str, offsets: list[Any], params: Mapping[str, Any], retention: int,
    bitmap_days: int, nums: UserTable, place_of: Callable[[str], tuple[int, int]],
    top: int = -1, seg: Segments | None = None,
) -> list[bytes]:
    """The apply script's arguments for one shard: the plan map, then the bitmap
    fragments. `offsets` is PLAN_OFFSETS's flat list; `params` the id keys and witness
    (IdKeys.as_plan, Witness.as_plan). Users without a number in `nums` go to PLAN_ASK
    (with their bucket, by `place_of`) and the script gives or finds theirs. A day's
    known numbers go as a bitmap fragment instead of a list when the day's whole bitmap,
    about `top` bits, is at most FRAGMENT_BYTES_PER_USER bytes per number: Redis then ORs
    it in with one BITOP."""
    b: list[Any] = []
    bf: list[Any] = []
    fragments: list[bytes] = []
    bu: list[Any] = []
    asked: dict[str, int] = {}
    for day, users in plan.activity.items():
        got, missing = split_known(users, nums)
        if missing:  # rare once the cache is warm
            bu += (day, missing)
            for user in missing:
                asked.setdefault(user, place_of(user)[1])
        listed: list[str] = []
        if (_redisformats is not None and got
                and top // 8 + 1 <= FRAGMENT_BYTES_PER_USER * len(got)):
            first, fragment = _redisformats.bitmap(got)
            fragments.append(fragment)
            bf += (day, first, len(fragments) + 1)
        else:
            # decimal strings, as the script passes them on to BITFIELD: a Lua number
            # would cost Redis a conversion to text per bit
            listed = list(map(str, got))
        b += (day, listed)
    c: list[Any] = []
    for user, bucket, ts, kind, day, claim in plan.customer:
        # a user without a number is not asked for one here: the script numbers a
        # signup's user once its event is claimed (a repeated id leaves no trace)
        number = nums.get(user)
        c += (user, bucket, ts, kind, day, "" if number is None else str(number),
              claim.digest, claim.origin)
    ask: list[Any] = []
    for user, bucket in asked.items():
        ask += (bucket, user)
    n: list[Any] = []
    for day, fld, claim in plan.counters:
        n += (day, fld, claim.digest, claim.origin)
    extra: dict[str, Any] = {}
    if seg is not None:
        _segment_plan(seg, c, n, extra)
    # cmsgpack turns an empty msgpack map into an empty Lua table either way; an empty
    # totals map must still be a map for `pairs`.
    return [_encode({PLAN_TAG: tag, PLAN_OFFSETS: offsets, PLAN_TOTALS: plan.totals,
                     PLAN_BITS: b, PLAN_FRAGMENTS: bf, PLAN_BITS_UNNUMBERED: bu,
                     PLAN_ASK: ask, PLAN_CUSTOMER: c, PLAN_COUNTERS: n,
                     PLAN_RETENTION: retention, PLAN_BITMAP_DAYS: bitmap_days,
                     **params, **extra}), *fragments]


def _segment_plan(seg: Segments, c: list[Any], n: list[Any], extra: dict[str, Any]) -> None:
    """With segments: a signup's kind `(0, values...)` becomes 0 plus an entry of
    PLAN_CUSTOMER_SEGMENTS (dimension -> value; one entry per customer event, empty for
    cancellations), and a counter field `(field, kind, values...)` becomes
    `[field, s:<kind>:<dim>:<value>...]`, the segment fields going to the `scnt:`
    hashes."""
    dims = seg.dims
    cs: list[Any] = []
    for i in range(3, len(c), CUSTOMER_STRIDE):
        kind = c[i]
        if isinstance(kind, tuple):
            c[i] = kind[0]
            cs.append({d: seg.lookup(j, v) or v for j, (d, v) in enumerate(zip(dims, kind[1:],
                                                                              strict=True))})
        else:
            cs.append([])
    for i in range(1, len(n), COUNTER_STRIDE):
        fld = n[i]
        if isinstance(fld, tuple):
            kind = fld[1]
            n[i] = [fld[0], *(segment_field(kind, d, seg.lookup(j, v) or v)
                              for j, (d, v) in enumerate(zip(dims, fld[2:], strict=True)))]
    extra[PLAN_CUSTOMER_SEGMENTS] = cs
    extra[PLAN_SEGMENT_DIMS] = list(dims)


def encode_claims(tag: str, claims: Sequence[Claim], ids: Mapping[str, Any]) -> bytes:
    """lua/claim.lua's ARGV[1]: the claims of one shard, in message order."""
    flat: list[Any] = []
    for c in claims:
        flat += (c.digest, c.origin, 1 if c.long else 0)
    return _encode({PLAN_TAG: tag, PLAN_CLAIMS: flat, **ids})


#: lua/forget.lua's ARGV[1] keys besides PLAN_TAG: the flat (bucket, user, ...) list,
#: the {first, last} day of the bitmaps that may exist, 1 with segments.
FORGET_USERS: Final = "u"
FORGET_DAYS: Final = "d"
FORGET_SEGMENTS: Final = "s"


def encode_forget(tag: str, users: Sequence[Any], days: Sequence[int],
                  segments: bool) -> bytes:
    """lua/forget.lua's ARGV[1]: the users of one shard (flat bucket, user, ... as
    stored: hashed with STREAM_USER_ID_KEY) and the days of bitmaps to clear."""
    return _encode({PLAN_TAG: tag, FORGET_USERS: list(users), FORGET_DAYS: list(days),
                    FORGET_SEGMENTS: 1 if segments else 0})


# -- script replies ----------------------------------------------------------------------

def text(value: Any) -> str:
    """A reply's string (redis-py gives bytes unless decode_responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Applied(NamedTuple):
    """lua/apply.lua wrote the batch: `events` id-carrying events applied; `witness` the
    caller's new witness count (-1: unchanged); `given` [user, bit number, ...] for the
    users the caller asked numbers for, flat and as the client gave them (bytes, or str
    with decode_responses; the numbers decimal)."""

    events: int
    witness: int
    given: list[Any]


class OffsetMismatch(NamedTuple):
    """lua/apply.lua wrote nothing: the stored offset of `src` is `stored`, not the one
    expected."""

    src: str
    stored: int


class StaleWitness(NamedTuple):
    """lua/apply.lua wrote nothing: Redis no longer holds the caller's witness;
    `forgotten` when users were erased meanwhile (lua/forget.lua)."""

    forgotten: bool


ApplyReply = Applied | OffsetMismatch | StaleWitness


def decode_apply(reply: Sequence[Any]) -> ApplyReply:
    """lua/apply.lua's reply: {1, applied, witness, {user, number, ...}}, {0, src,
    stored} or {2, forgotten}."""
    status = int(reply[0])
    if status == 0:
        return OffsetMismatch(text(reply[1]), int(reply[2]))
    if status == 2:
        return StaleWitness(len(reply) > 1 and bool(int(reply[1])))
    # the pairs stay as the client gave them: a batch of new users has thousands, and
    # the number cache takes them in one call (usermap.add_flat)
    return Applied(int(reply[1]), int(reply[2]), list(reply[3] or []))


def decode_claims(reply: Sequence[Any]) -> list[bool]:
    """lua/claim.lua's reply: per claim, whether its event applies (not a duplicate)."""
    return [bool(int(v)) for v in reply]


class TopCampaigns(NamedTuple):
    """One campaign window of lua/campaigns.lua: the window's visits and conversions of
    every campaign, and (name, visits, conversions) of its top campaigns."""

    visits: int
    conversions: int
    top: list[tuple[str, int, int]]

    def add_into(self, into: dict[str, int], other: str) -> None:
        """Add each top campaign's `v:` and `c:` to `into`, and the window's totals less
        theirs as `other`'s."""
        rest_v, rest_c = self.visits, self.conversions
        for name, v, c in self.top:
            into[visit_field(name)] = into.get(visit_field(name), 0) + v
            into[conversion_field(name)] = into.get(conversion_field(name), 0) + c
            rest_v -= v
            rest_c -= c
        into[visit_field(other)] = into.get(visit_field(other), 0) + rest_v
        into[conversion_field(other)] = into.get(conversion_field(other), 0) + rest_c


#: lua/campaigns.lua's statuses: windows past `today` (sum the per-day counters
#: instead), at `today` (read them), not there yet (call again).
WINDOWS_PAST, WINDOWS_READY, WINDOWS_MOVING = 0, 1, 2


class CampaignWindows(NamedTuple):
    status: int
    today: TopCampaigns | None = None
    previous: TopCampaigns | None = None


def _top(flat: Sequence[Any]) -> TopCampaigns:
    return TopCampaigns(int(flat[0]), int(flat[1]),
                        [(text(flat[i]), int(flat[i + 1]), int(flat[i + 2]))
                         for i in range(2, len(flat), 3)])


def decode_campaigns(reply: Sequence[Any]) -> CampaignWindows:
    """lua/campaigns.lua's reply: {0}, {2} or {1, top0, top1}."""
    status = int(reply[0])
    if status != WINDOWS_READY:
        return CampaignWindows(status)
    return CampaignWindows(status, _top(reply[1]), _top(reply[2]))


class CohortCount(NamedTuple):
    """Day-N cohort of one shard: its size and members retained."""

    cohort: int
    retained: int


def decode_cohorts(reply: Sequence[Any], days: Sequence[int]
                   ) -> tuple[list[CohortCount], list[CohortCount]]:
    """lua/cohort.lua's reply without segments: for today, then the day before, a
    (cohort, retained) pair per N of `days` (COHORT_DAYS), in order."""
    pairs = [CohortCount(int(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]
    return pairs[:len(days)], pairs[len(days):2 * len(days)]


class SegmentCohort(NamedTuple):
    n: int
    dim: str
    value: str
    cohort: int
    retained: int


def decode_segment_cohorts(reply: Sequence[Any]) -> Iterator[SegmentCohort]:
    """lua/cohort.lua's reply with segments: {N, dimension, value, cohort, retained, ...}."""
    for i in range(0, len(reply), 5):
        yield SegmentCohort(int(reply[i]), text(reply[i + 1]), text(reply[i + 2]),
                            int(reply[i + 3]), int(reply[i + 4]))


class FirstWeek(NamedTuple):
    """lua/firstweek.lua's reply: cohort and participants of today, then the day before."""

    cohort: int
    participants: int
    previous_cohort: int
    previous_participants: int


def decode_first_week(reply: Sequence[Any]) -> FirstWeek:
    return FirstWeek(*(int(x) for x in reply))


class OffsetMove(NamedTuple):
    """lua/offsets.lua's reply: `moved`, or the offset stored instead of the one the
    caller read (-1: none) when another worker moved it meanwhile."""

    moved: bool
    stored: int


def decode_offset_move(reply: Sequence[Any]) -> OffsetMove:
    moved = int(reply[0]) == 1
    stored = -1 if moved or len(reply) < 2 or reply[1] is None else int(reply[1])
    return OffsetMove(moved, stored)


def decode_registry(reply: Sequence[Any]) -> list[list[str]]:
    """lua/segments.lua's reply: per registry key, its members after the call."""
    return [[text(m) for m in members] for members in reply]


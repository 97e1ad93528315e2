"""Every Redis key name, its hash tag and its expiry.

Layout (`P` is the key prefix, default `es`):

- `P:{h}:dau:<day>` HyperLogLog of users active on a day. All of them share one hash
  tag so a rolling window is one multi-key PFCOUNT (Redis Cluster needs one slot).
  Written with PFADD outside the atomic script: PFADD is idempotent, so a replay is
  harmless.
- `P:{h}:sdau:<dim>:<value>:<day>` HyperLogLog of users active on a day by segment, and
  `P:{h}:seg:<dim>` set: the segment values registered for a dimension (at most
  `STREAM_SEGMENT_MAX_VALUES`); both only with `STREAM_SEGMENTS`.
- `P:scan` hash: the latest scan of the user records (days-active distribution and
  lifecycle, stream/scan.py), with `P:scan:lock` electing the worker that runs it.
- `P:meta` hash: the store's fixed parameters (zone, shards, user buckets, layout version);
  a worker refuses a store whose parameters differ from its own settings.
- Per shard `s` (users are split over `shards` hash tags `{P<s>}` by a hash of user_id;
  with one shard everything exact lives in one slot). With STREAM_USER_ID_KEY, every
  user_id below is the id's keyed hash (stream/privacy.py), never the id:
  - `P:{Ps}:off` hash `<topic>/<partition>` -> last applied Kafka offset. Written by the
    same Lua call as the batch's writes: this is what makes counters exact under
    redelivery.
  - `P:{Ps}:n:<bucket>` hash user_id -> the user's bit number in the shard, and
    `P:{Ps}:seq` the next number to give (numbers start at 0 and are never reused). Only
    stream/lua/apply.lua gives numbers; a worker caches them, and `P:{Ps}:w:<token>` (its
    witness, a counter bumped by each of its calls that got numbers, expiring after a
    week idle) lets the apply script refuse numbers Redis no longer holds (lost writes).
  - `P:{Ps}:a:<day>` bitmap: bit n set = the user numbered n was active on that local
    day; `P:{Ps}:sg:<day>` bitmap: ... had a signup dated that day. Kept as long as the
    other per-day keys, and at least BITMAP_DAYS days: they give first-week
    participation at read time (lua/firstweek.lua), for any day still kept, and the
    days-active and lifecycle scan (lua/scan.lua). A bit per user and day: the exact
    per-user activity costs one BITFIELD sub-command per new (user, day), no read.
  - `P:{Ps}:u:<bucket>` hash user_id -> packed signup/cancellation history (customers
    only). Buckets keep each hash small enough for Redis's compact listpack encoding,
    which is what keeps memory per user low.
  - `P:{Ps}:cust` hash of difference arrays over days (`D:`, `N:` + day): customers at
    a window start, and churned of those.
  - `P:{Ps}:cnt:<day>` hash of exact per-day counters: `v:<campaign>`, `c:<campaign>`
    (`other` for a name longer than 128 characters), `nps:<score>`, `csat:<score>`.
    Reads ask for the survey fields by name (WINDOW_FIELDS of stream/store/wire.py, so
    add a new field there) and for campaigns from the rolling windows below.
  - `P:{Ps}:tot` hash of all-time counters: `e:<type>` events, `dl:<reason>` dead letters,
    `late:<age>` events folded days after their day (age `1d`, `2-7d`, `8-30d`, `31d+`),
    `fu` users erased by `forget`, `ig:<reason>` messages of a mapped format that became
    no event.
  - `P:{Ps}:cw:<k>` hash and `P:{Ps}:cwv:<k>` sorted set, k = 0 or 1: the rolling
    campaign window of the 30 days ending `anchor - k` (`@` of `cw:0`): `#v`, `#c` its
    visits and conversions, `c:<campaign>` a campaign's conversions, `cwv` campaign ->
    visits. Kept by lua/apply.lua (each batch) and lua/campaigns.lua (moved a day at a
    time on read), they equal the sums of the `cnt:` hashes of their days. With more than
    one shard a campaign's counters live in the shard of a hash of its name
    (stream/campaigns.py), not of the user's.
  - `P:{Ps}:wset` set of the tokens of witnesses, and `P:{Ps}:wf:<token>` the marker
    lua/forget.lua leaves for a caller whose witness it deleted (stream/privacy.py).
  - With `STREAM_SEGMENTS` only (stream/segments.py): `P:{Ps}:scnt:<day>` hash of the
    per-day counters by segment (`s:<kind>:<dim>:<value>`, kind `v`, `c`, `nps<score>`,
    `csat<score>`); `P:{Ps}:scust` hash of churn difference arrays by segment
    (`sD:<dim>:<value>:<day>`, `sN:...`); `P:{Ps}:us:<bucket>` hash user_id -> the
    user's signups with their segment values (the customer's segment is that of their
    latest signup); `P:{Ps}:ssg:<day>` hash bit number -> the segment values
    (msgpack, dimension -> value) of that user's first signup dated that day (by ts),
    for the signup cohorts by segment (lua/cohort.lua), kept as long as the signup
    bitmaps.
  - `P:{Ps}:ids:<class>:<generation>` hash event-id digest -> where it was first seen;
    `s` class (visit, conversion, survey) in 10-day generations, `l` class (signup,
    cancellation) in 30-day generations, each expiring when no event it holds can still
    be inside a window.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

#: Layout version stored in `P:meta`; bump when a key's meaning changes.
LAYOUT_VERSION: Final = 2

SHORT_ID_GENERATION_DAYS: Final = 10
LONG_ID_GENERATION_DAYS: Final = 30
#: Ids of visits, conversions and surveys are kept this long after they were first seen:
#: longer than the 30-day windows plus the 5-minute future allowance, with a margin.
SHORT_ID_RETENTION_DAYS: Final = 45
#: Days the per-day activity and signup bitmaps are kept at least (first week reads 38
#: days back from yesterday, the lifecycle scan 47 days back from today).
BITMAP_DAYS: Final = 48
#: Seconds in a day, for EXPIREAT arithmetic.
DAY_SECONDS: Final = 86_400

#: The suffixes of a shard's keys after its tag (`KeySpace.tag`), by the name the Lua
#: scripts know them by (`K.<name>`, see `lua_prelude`): spelled here only. A per-day
#: key is its suffix followed by the day, a per-bucket one by the bucket, a witness
#: (`w`, `wf`) by its caller's token, a campaign window (`cw`, `cwv`) by 0 or 1; `tmp`
#: keys are deleted within the script call that made them.
SHARD_SUFFIXES: Final[Mapping[str, str]] = {
    "off": "off", "tot": "tot", "cust": "cust", "scust": "scust", "cnt": "cnt:",
    "scnt": "scnt:", "a": "a:", "sg": "sg:", "ssg": "ssg:", "u": "u:", "us": "us:",
    "n": "n:", "seq": "seq", "w": "w:", "wf": "wf:", "wset": "wset", "scratch": "scratch",
    "cw": "cw:", "cwv": "cwv:", "tmp": "tmp:",
}
_S = SHARD_SUFFIXES


def lua_prelude() -> str:
    """The first lines of every Lua script (stream/store/scripts.py): a table `K` of
    SHARD_SUFFIXES, so a script builds `tag .. K.cnt .. day` rather than spelling the
    suffix itself. Given at load time: no call carries it."""
    items = ", ".join(f"{name} = '{suffix}'" for name, suffix in SHARD_SUFFIXES.items())
    return f"-- key suffixes after a shard's tag (stream/keys.py)\nlocal K = {{{items}}}\n"


def user_hash(user_id: str) -> int:
    """Stable 32-bit hash of a user id (CRC-32): decides the user's shard and bucket."""
    return zlib.crc32(user_id.encode())


def id_hash(event_id: str) -> int:
    """Stable 32-bit hash of an event id: decides which shard remembers it."""
    return zlib.crc32(event_id.encode(), 0x5EED)


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Key names for one store. `shards` >= 1, `buckets` >= 1 (user buckets per shard).

    A value: names, expiries and placement only. The mutable state a store needs besides
    (the segment registry, the user-id hashing cache) belongs to the `Store`, and the
    fold gets it through its `FoldContext`."""

    prefix: str = "es"
    shards: int = 1
    buckets: int = 4096
    max_lateness_days: int = 400
    retention_days: int = 90

    # -- unsharded ------------------------------------------------------------------
    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def scan(self) -> str:
        return f"{self.prefix}:scan"

    def dau(self, day: int) -> str:
        return f"{self.prefix}:{{h}}:dau:{day}"

    def scratch(self) -> str:
        """A key scripts use and delete within one call, in the daily keys' slot."""
        return f"{self.prefix}:{{h}}:scratch"

    def seg_registry(self, dim: str) -> str:
        return f"{self.prefix}:{{h}}:seg:{dim}"

    def sdau(self, dim: str, value: str, day: int) -> str:
        return f"{self.prefix}:{{h}}:sdau:{dim}:{value}:{day}"

    # -- per shard --------------------------------------------------------------------
    def tag(self, shard: int) -> str:
        return f"{self.prefix}:{{{self.prefix}{shard}}}:"

    def offsets(self, shard: int) -> str:
        return self.tag(shard) + _S["off"]

    def cust(self, shard: int) -> str:
        return self.tag(shard) + _S["cust"]

    def counters(self, shard: int, day: int) -> str:
        return f"{self.tag(shard)}{_S['cnt']}{day}"

    def scust(self, shard: int) -> str:
        return self.tag(shard) + _S["scust"]

    def scounters(self, shard: int, day: int) -> str:
        return f"{self.tag(shard)}{_S['scnt']}{day}"

    def totals(self, shard: int) -> str:
        return self.tag(shard) + _S["tot"]

    def seq(self, shard: int) -> str:
        """The next bit number to give in the shard (lua/apply.lua)."""
        return self.tag(shard) + _S["seq"]

    def user_shard_bucket(self, user_id: str) -> tuple[int, int]:
        h = user_hash(user_id)
        return h % self.shards, (h // self.shards) % self.buckets

    def id_shard(self, event_id: str) -> int:
        return id_hash(event_id) % self.shards

    # -- expiry -------------------------------------------------------------------------
    @property
    def bitmap_days(self) -> int:
        """Days the activity and signup bitmaps are kept: as other per-day keys, and at
        least BITMAP_DAYS."""
        return max(self.retention_days, BITMAP_DAYS)

    def day_expire_at(self, day: int) -> int:
        """Unix time at which per-day keys of `day` expire: `retention_days` after the day,
        plus a day of slack for zones east or west of UTC."""
        return (day + self.retention_days + 2) * DAY_SECONDS

    def id_generations(self, today: int) -> tuple[list[str], str, str, int, int]:
        """Id-key suffixes to look in, the short- and long-class suffixes to write to, and
        their unix expiry times.

        A generation is written while it is current and read until it expires: short ids
        live at least SHORT_ID_RETENTION_DAYS, long ids at least `max_lateness_days` plus
        40 days, so a repeat of a signup is recognised for as long as it could matter."""
        sg = today // SHORT_ID_GENERATION_DAYS
        lg = today // LONG_ID_GENERATION_DAYS
        short_keep = -(-SHORT_ID_RETENTION_DAYS // SHORT_ID_GENERATION_DAYS) + 1
        long_days = self.max_lateness_days + 40
        long_keep = -(-long_days // LONG_ID_GENERATION_DAYS) + 1
        look = [f"ids:s:{g}" for g in range(sg, sg - short_keep, -1)]
        look += [f"ids:l:{g}" for g in range(lg, lg - long_keep, -1)]
        short_exp = (sg + short_keep + 1) * SHORT_ID_GENERATION_DAYS * DAY_SECONDS
        long_exp = (lg + long_keep + 1) * LONG_ID_GENERATION_DAYS * DAY_SECONDS
        return look, f"ids:s:{sg}", f"ids:l:{lg}", short_exp, long_exp

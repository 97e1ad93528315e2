"""Key names, hash tags and expiries of `stream/keys.py`, against names written by hand
from the layout it documents, Redis Cluster slots computed here (CRC16 as the cluster
specification defines it), and CRC-32 computed bit by bit."""

from __future__ import annotations

import pytest

from stream.keys import KeySpace, id_hash, user_hash

DAY = 20_000  # 2024-10-04, a day number (days since 1970-01-01)


# -- independent hashes -------------------------------------------------------------------


def crc32(data: bytes, start: int = 0) -> int:
    """CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), continuing from the CRC
    `start` of earlier data, as zlib.crc32(data, start) is documented to."""
    crc = start ^ 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def cluster_slot(key: str) -> int:
    """The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part inside
    the first non-empty `{...}`), or of the whole key, modulo 16384."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    crc = 0
    for byte in raw:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


def test_the_reference_hashes_match_their_published_check_values() -> None:
    # The check values of both CRCs for "123456789" (the cluster specification gives
    # 0x31C3 for CRC16).
    assert crc32(b"123456789") == 0xCBF43926
    assert cluster_slot("123456789") == 0x31C3 % 16384
    assert cluster_slot("{user1000}.following") == cluster_slot("{user1000}.followers")
    assert cluster_slot("foo{bar}") == cluster_slot("bar") != cluster_slot("foo{}{bar}")


# -- names -----------------------------------------------------------------------------------


def test_names_of_the_default_prefix() -> None:
    keys = KeySpace()
    assert keys.meta == "es:meta"
    assert keys.scan == "es:scan"
    assert keys.dau(DAY) == "es:{h}:dau:20000"
    assert keys.scratch() == "es:{h}:scratch"
    assert keys.seg_registry("plan") == "es:{h}:seg:plan"
    assert keys.sdau("plan", "pro", DAY) == "es:{h}:sdau:plan:pro:20000"
    assert keys.tag(0) == "es:{es0}:"
    assert keys.offsets(0) == "es:{es0}:off"
    assert keys.cust(3) == "es:{es3}:cust"
    assert keys.counters(2, DAY) == "es:{es2}:cnt:20000"
    assert keys.scust(1) == "es:{es1}:scust"
    assert keys.scounters(1, DAY) == "es:{es1}:scnt:20000"
    assert keys.totals(15) == "es:{es15}:tot"


def test_names_follow_the_prefix() -> None:
    keys = KeySpace(prefix="app.v2", shards=4)
    assert keys.meta == "app.v2:meta"
    assert keys.scan == "app.v2:scan"
    assert keys.dau(7) == "app.v2:{h}:dau:7"
    assert keys.offsets(3) == "app.v2:{app.v23}:off"
    assert keys.counters(0, 7) == "app.v2:{app.v20}:cnt:7"


# -- hash tags (Redis Cluster) -------------------------------------------------------------


def per_shard_names(keys: KeySpace, shard: int) -> list[str]:
    return [keys.offsets(shard), keys.cust(shard), keys.counters(shard, DAY),
            keys.scust(shard), keys.scounters(shard, DAY), keys.totals(shard),
            keys.tag(shard) + "n:7", keys.tag(shard) + "a:20000"]


@pytest.mark.parametrize("prefix", ["es", "app.v2"])
def test_every_key_of_a_shard_is_in_one_slot_and_shards_differ(prefix: str) -> None:
    """A batch's atomic script touches one shard's keys only: Redis Cluster requires them
    in one slot. The unique-count keys share one slot of their own (a rolling window is
    one multi-key PFCOUNT)."""
    keys = KeySpace(prefix=prefix, shards=16)
    slots = []
    for shard in range(16):
        own = {cluster_slot(name) for name in per_shard_names(keys, shard)}
        assert len(own) == 1, (shard, own)
        slots.append(own.pop())
    assert len(set(slots)) == 16
    daily = {cluster_slot(n) for n in (keys.dau(DAY), keys.dau(DAY - 29), keys.scratch(),
                                       keys.seg_registry("plan"),
                                       keys.sdau("plan", "pro", DAY))}
    assert len(daily) == 1


def test_sixteen_shards_spread_over_three_masters() -> None:
    """The default cluster layout (16 shards) puts shards on each master of a
    three-master cluster with the slots split evenly (0-5460, 5461-10922, 10923-16383)."""
    keys = KeySpace(shards=16)
    masters = [0, 0, 0]
    for shard in range(16):
        slot = cluster_slot(keys.offsets(shard))
        masters[0 if slot <= 5460 else 1 if slot <= 10922 else 2] += 1
    assert min(masters) >= 3, masters


# -- placement -----------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "want"), [
    ("user-1", 2116437524), ("alice", 663665735), ("", 0), ("é", 235179326)])
def test_user_hash_is_crc32_of_the_utf8_id(user: str, want: int) -> None:
    assert user_hash(user) == want == crc32(user.encode())


@pytest.mark.parametrize(("event", "want"), [
    ("user-1", 1407139810), ("alice", 3692611512), ("", 24301), ("é", 1762098284)])
def test_id_hash_is_crc32_continued_from_0x5eed(event: str, want: int) -> None:
    assert id_hash(event) == want == crc32(event.encode(), 0x5EED)


def test_a_user_is_placed_by_its_hash() -> None:
    """Shard = hash mod shards; bucket = (hash div shards) mod buckets, so shard and
    bucket use different bits of the hash."""
    keys = KeySpace(shards=16, buckets=1024)
    # 2116437524 = 16 * 132277345 + 4; 132277345 = 1024 * 129177 + 97
    assert keys.user_shard_bucket("user-1") == (4, 97)
    # 663665735 = 16 * 41479108 + 7; 41479108 = 1024 * 40506 + 964
    assert keys.user_shard_bucket("alice") == (7, 964)
    assert KeySpace(shards=1, buckets=4096).user_shard_bucket("alice") == (
        0, 663665735 % 4096)
    # 3692611512 = 16 * 230788219 + 8
    assert keys.id_shard("alice") == 8
    assert KeySpace(shards=1).id_shard("alice") == 0


def test_placement_is_stable_across_instances() -> None:
    a, b = KeySpace(shards=16, buckets=64), KeySpace(shards=16, buckets=64)
    for i in range(200):
        assert a.user_shard_bucket(f"u{i}") == b.user_shard_bucket(f"u{i}")
        assert a.id_shard(f"e{i}") == b.id_shard(f"e{i}")


# -- expiries --------------------------------------------------------------------------------


def test_per_day_keys_expire_retention_days_after_their_day_plus_slack() -> None:
    # (20000 + 90 + 2) days after the epoch, in seconds
    assert KeySpace().day_expire_at(DAY) == 20_092 * 86_400 == 1_735_948_800
    assert KeySpace(retention_days=32).day_expire_at(DAY) == 20_034 * 86_400


@pytest.mark.parametrize(("retention", "bitmaps"), [(32, 48), (47, 48), (48, 48), (90, 90)])
def test_bitmaps_are_kept_at_least_48_days(retention: int, bitmaps: int) -> None:
    assert KeySpace(retention_days=retention).bitmap_days == bitmaps


def test_event_id_generations_worked_by_hand() -> None:
    # day 20000: short generation 20000 // 10 = 2000, long 20000 // 30 = 666; short ids
    # are read from 6 generations (ceil(45 / 10) + 1), long ids from 16
    # (ceil((400 + 40) / 30) + 1).
    look, short, long_, short_exp, long_exp = KeySpace().id_generations(DAY)
    assert short == "ids:s:2000"
    assert long_ == "ids:l:666"
    assert look == ([f"ids:s:{g}" for g in (2000, 1999, 1998, 1997, 1996, 1995)]
                    + [f"ids:l:{g}" for g in range(666, 650, -1)])
    assert short_exp == (2000 + 6 + 1) * 10 * 86_400
    assert long_exp == (666 + 16 + 1) * 30 * 86_400


@pytest.mark.parametrize("lateness", [1, 30, 400, 3650])
def test_an_event_id_is_remembered_as_long_as_it_can_matter(lateness: int) -> None:
    """An id written on day d is still looked up on every later day while a repeat could
    change a figure (short ids: 45 days; long ids: the lateness allowed plus 40 days), and
    its key does not expire before then."""
    keys = KeySpace(max_lateness_days=lateness)
    for written in range(DAY, DAY + 61):
        _, short, long_, short_exp, long_exp = keys.id_generations(written)
        for later in range(written, written + 46):
            assert short in keys.id_generations(later)[0], (written, later)
        assert short_exp >= (written + 46) * 86_400
        for later in (written + lateness + 40, written + (lateness + 40) // 2):
            assert long_ in keys.id_generations(later)[0], (written, later)
        assert long_exp >= (written + lateness + 41) * 86_400

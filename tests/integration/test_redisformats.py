"""Values the worker builds in Redis's own formats (stream/store/_redisformats.c), checked
against what a real redis-server builds itself: a dense HyperLogLog must hold exactly the
registers PFADD of the same members gives, and a bitmap fragment exactly the bytes SETBIT
gives."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.demo.localservers import RedisServer
from stream.store import store as store_module

formats = store_module._redisformats
pytestmark = pytest.mark.skipif(formats is None, reason="the compiled formats are not built")

HEADER = 16  # "HYLL", encoding, 3 unused bytes, cached cardinality


def test_the_compiled_formats_are_built() -> None:
    assert store_module._redisformats is not None


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        c = redis.Redis.from_url(server.url)
        # PFADD then keeps even a small HyperLogLog dense, the encoding compared here.
        c.config_set("hll-sparse-max-bytes", 0)
        yield c
        c.close()


def registers(client: redis.Redis, key: str) -> bytes:
    value = client.get(key)
    assert value is not None and value[:5] == b"HYLL\x00"  # dense
    return value[HEADER:]


@pytest.mark.parametrize("size", [0, 1, 7, 300, 20_000])
def test_dense_hll_holds_the_registers_pfadd_sets(client: redis.Redis, size: int) -> None:
    rng = random.Random(size)
    members = [f"user-{rng.randrange(10**12)}" for _ in range(size)]
    members += ["", "ü-non-ascii", "quote\"d", "x" * 300]  # tails of every length mod 8
    members += ["a" * n for n in range(1, 17)]
    client.delete("by-redis", "ours")
    client.pfadd("by-redis", *members)
    client.set("ours", formats.hll_dense(members))
    assert registers(client, "ours") == registers(client, "by-redis")
    assert client.pfcount("ours") == client.pfcount("by-redis")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=200), st.lists(st.text(max_size=40), max_size=200))
def test_merging_dense_hlls_matches_pfadd(client: redis.Redis, first: list[str],
                                          second: list[str]) -> None:
    """What the worker does batch after batch: PFMERGE into a key that already holds
    members, against PFADD of both lists."""
    client.delete("by-redis", "ours", "batch")
    client.pfadd("by-redis", *first, *second) if first or second else None
    client.set("ours", formats.hll_dense(first))
    client.set("batch", formats.hll_dense(second))
    client.pfmerge("ours", "batch")
    if first or second:
        assert registers(client, "ours") == registers(client, "by-redis")
    assert client.pfcount("ours") == (client.pfcount("by-redis") if first or second else 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.booleans())
def test_bitmap_fragment_holds_the_bits_setbit_sets(client: redis.Redis, numbers: list[int],
                                                    as_text: bool) -> None:
    client.delete("by-redis", "ours")
    for n in numbers:
        client.setbit("by-redis", n, 1)
    first, fragment = formats.bitmap([str(n) for n in numbers] if as_text else numbers)
    assert first == min(numbers) // 8
    # As lua/apply.lua ORs it in: at its first byte of an empty scratch key.
    client.setrange("ours", first, fragment)
    assert client.get("ours") == client.get("by-redis")


def test_bitmap_refuses_what_is_not_a_bit_number() -> None:
    for bad in (["-1"], ["1a"], [""], [-3], [1.5]):
        with pytest.raises((ValueError, TypeError)):
            formats.bitmap(bad)
    assert formats.bitmap([]) == (0, b"")

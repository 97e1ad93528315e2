"""Privacy: keyed hashing of user ids before anything is stored (pure; `forget` is in
stream/forget.py).

With `STREAM_USER_ID_KEY` set, every `user_id` is replaced by its HMAC-SHA-256 under that
key, truncated to 128 bits (RFC 2104 section 5) and written in unpadded base64url (22
characters, shorter than a UUID), before the fold sees it: the store's shard and bucket,
number map, customer records and HyperLogLog members all come from the hash, so Redis
holds no user id in clear. The same id always gives the same hash, so every figure is
the same as without the key. The key itself never leaves this module's objects: the
store records only a fingerprint (an HMAC of a fixed label), which tells keys apart and
reveals nothing of the key.

See docs/privacy.md.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

#: Bytes of the HMAC kept: 128 bits make a collision among 10^12 users about 10^-15 likely.
HASH_BYTES = 16
#: Raw ids whose hash a process remembers, at most (a dict hit is ~10x cheaper than an
#: HMAC); past it the cache starts over.
CACHE_MAX = 300_000
#: Users per forget.lua call: each call is atomic in its shard and blocks it while it
#: runs, so calls stay short (about 3 ms with 90 days of bitmaps).
#: Stored in the store's meta record when user ids are kept in clear.
NO_KEY = "none"
_FINGERPRINT_LABEL = b"engagement-stream user id key fingerprint v1"


class UserIdHasher:
    """Callable: raw user id -> its keyed hash. `cache` maps raw ids to hashes (the
    compiled fold reads it directly and calls the object only on a miss)."""

    __slots__ = ("_key", "cache", "fingerprint")

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self.cache: dict[str, str] = {}
        #: identifies the key in the store's meta record; not the key, not reversible
        self.fingerprint = hmac.digest(self._key, _FINGERPRINT_LABEL, "sha256")[:8].hex()

    def __call__(self, user_id: str) -> str:
        hashed = self.cache.get(user_id)
        if hashed is None:
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            digest = hmac.digest(self._key, user_id.encode(), "sha256")[:HASH_BYTES]
            hashed = self.cache[user_id] = base64.urlsafe_b64encode(digest).rstrip(
                b"=").decode()
        return hashed

    def __repr__(self) -> str:  # never the key
        return f"UserIdHasher(fingerprint={self.fingerprint})"

    def __reduce__(self) -> Any:  # a pickled copy would carry the key
        raise TypeError("a UserIdHasher is not copied")


def fingerprint(hasher: UserIdHasher | None) -> str:
    """What the store records about the key: its fingerprint, or NO_KEY."""
    return NO_KEY if hasher is None else hasher.fingerprint


def plain_hash(key: str, user_id: str) -> str:
    """The hash of `user_id` under `key`, without a cache (documentation, tests)."""
    return UserIdHasher(key)(user_id)


# -- forget ---------------------------------------------------------------------------------

def read_ids(lines: Iterable[str]) -> Iterator[str]:
    """User ids of a `--from-file` file: one per line without its line break (spaces are
    part of an id, as in events), empty lines skipped."""
    for line in lines:
        uid = line.rstrip("\r\n")
        if uid:
            yield uid


def user_id_hasher(settings: Settings) -> UserIdHasher | None:
    """The hasher of STREAM_USER_ID_KEY, or None when it is not set."""
    key = settings.user_id_key
    return None if key is None else UserIdHasher(key.get_secret_value())

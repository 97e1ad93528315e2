"""Keyed hashing of user ids (STREAM_USER_ID_KEY): the hash itself, the compiled fold's
hashing against the Python fold's, and the key kept out of reprs, errors and writes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import stages as fold_module
from stream.decode import Prepared
from stream.fold import FoldContext
from stream.keys import KeySpace
from stream.privacy import UserIdHasher, fingerprint, read_ids
from stream.settings import SettingsError, load
from stream.stages import fold_prepared
from stream.store.scripts import source
from stream.timebuckets import DayMapper
from tests.unit.test_fastfold import NOW, USERS, _batches, _normal

KEY = "k" * 20 + "-secret-user-id-key"


def reference(key: str, user_id: str) -> str:
    """HMAC-SHA-256, first 128 bits, unpadded base64url: as docs/privacy.md says, with
    the standard library only."""
    mac = hmac.new(key.encode(), user_id.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@pytest.mark.parametrize("user", ["u1", "ü-non-ascii", "用户-3", "x" * 256])
def test_hash_is_truncated_hmac_sha256(user: str) -> None:
    h = UserIdHasher(KEY)
    assert h(user) == reference(KEY, user)
    assert h(user) == h(user) and len(h(user)) == 22
    assert UserIdHasher(KEY + "x")(user) != h(user)


def test_key_is_in_no_repr_copy_or_fingerprint() -> None:
    h = UserIdHasher(KEY)
    assert KEY not in repr(h) and KEY not in h.fingerprint
    assert fingerprint(h) == h.fingerprint != fingerprint(UserIdHasher(KEY + "x"))
    assert fingerprint(None) == "none"
    with pytest.raises(TypeError):
        pickle.dumps(h)


def test_settings_take_the_key_from_a_file_and_never_echo_it(tmp_path: Any,
                                                              monkeypatch: Any) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    monkeypatch.setenv("STREAM_USER_ID_KEY_FILE", str(path))
    s = load()
    assert s.user_id_key is not None and s.user_id_key.get_secret_value() == KEY
    assert KEY not in repr(s) and KEY not in str(s.model_dump())
    monkeypatch.delenv("STREAM_USER_ID_KEY_FILE")
    monkeypatch.setenv("STREAM_USER_ID_KEY", "short-key")
    with pytest.raises(SettingsError) as err:
        load()
    assert "STREAM_USER_ID_KEY" in str(err.value) and "short-key" not in str(err.value)
    assert "\n" not in str(err.value)


def test_read_ids_takes_lines_without_their_breaks() -> None:
    assert list(read_ids(["a\n", "\n", " b \r\n", "\r\n", "c"])) == ["a", " b ", "c"]


def test_forget_script_holds_the_churn_functions_of_apply() -> None:
    lua = source("forget")
    assert "--@include" not in lua.replace("`--@include", "")
    for name in ("local function churn_steps", "local function apply_diff",
                 "local function seg_churn_steps", "local function load"):
        assert name in lua


needs_extension = pytest.mark.skipif(fold_module._fastfold is None,
                                     reason="the compiled fold is not built")


@needs_extension
@settings(max_examples=200, deadline=None)
@given(_batches(), st.sampled_from(["UTC", "Europe/Berlin"]), st.sampled_from([1, 3]))
def test_compiled_fold_hashes_as_the_python_fold(
        batch: tuple[Prepared, dict[tuple[str, int], int], dict[str, int]], zone: str,
        shards: int) -> None:
    prepared, applied, seen = batch
    hasher = UserIdHasher(KEY)
    keys = KeySpace(shards=shards, buckets=16)
    hashed_seen = {hasher(u): d for u, d in seen.items()}
    today = DayMapper(zone).today(NOW)
    fast = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, applied,
                                               hashed_seen, user_ids=hasher))
    slow = fold_prepared(prepared, FoldContext(keys, DayMapper(zone), today, applied,
                                               hashed_seen, user_ids=hasher), compiled=False)
    assert _normal(fast) == _normal(slow)
    # no raw id in what goes to Redis (hashes are 22 base64url characters)
    members = {u for users in fast.hll.values() for u in users}
    members |= {u for p in fast.shards.values() for us in p.activity.values() for u in us}
    members |= {op[0] for p in fast.shards.values() for op in p.customer}
    assert not members & set(USERS)
    assert all(len(u) == 22 for u in members)


@needs_extension
def test_compiled_fold_takes_plain_activity_with_a_key() -> None:
    """Guards the property above against a shortcut that hands everything to Python."""
    ts = int(NOW.timestamp() * 1000) - 3_600_000
    values: list[bytes | None] = [
        b'{"event_id":"a%d","type":"activity","user_id":"u%d","ts":%d}' % (i, i, ts)
        for i in range(5)]
    prepared = Prepared(values, list(range(5)), [("t/0", 0, 5)], ts + 3_600_000,
                        400 * 86_400_000)
    hasher = UserIdHasher(KEY)
    keys = KeySpace(shards=1, buckets=16)
    days = DayMapper("UTC")
    ctx = (prepared.now_ms, prepared.lateness_ms, 1, True, {}, days.day_of_ms, 0, 0, {}, {},
           [{}], {}, days.today(NOW), hasher.cache, hasher)
    assert fold_module._fastfold is not None
    taken, left, _late = fold_module._fastfold.fold_activity(values, prepared.offsets, 0, 5,
                                                             -1, ctx)
    assert taken == [5] and left == []
    hasher.cache.clear()
    w = fold_prepared(prepared, FoldContext(keys, days, days.today(NOW), {}, user_ids=hasher))
    assert w.hll == {ts // 86_400_000: {reference(KEY, f"u{i}") for i in range(5)}}
    assert set(hasher.cache) == {f"u{i}" for i in range(5)}  # hashed once, then cached

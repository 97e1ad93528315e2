"""Settings of Redis Sentinel: checked at start, one line naming the setting; the
sentinels' password from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import SettingsError, load


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("STREAM_REDIS_SENTINELS", "STREAM_REDIS_SENTINEL_MASTER",
                 "STREAM_REDIS_SENTINEL_PASSWORD", "STREAM_REDIS_SENTINEL_PASSWORD_FILE",
                 "STREAM_REDIS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_sentinels_with_their_master_and_password_file(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    _env(monkeypatch, STREAM_REDIS_SENTINELS=" 10.0.0.1:26379, sentinel-b:26380,",
         STREAM_REDIS_SENTINEL_MASTER="engagement",
         STREAM_REDIS_SENTINEL_PASSWORD_FILE=str(secret))
    settings = load()
    assert settings.sentinel_list == [("10.0.0.1", 26379), ("sentinel-b", 26380)]
    assert settings.redis_sentinel_password is not None
    assert settings.redis_sentinel_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(("values", "named"), [
    ({"STREAM_REDIS_SENTINELS": "a:26379"}, "STREAM_REDIS_SENTINEL_MASTER"),
    ({"STREAM_REDIS_SENTINEL_MASTER": "m"}, "STREAM_REDIS_SENTINELS"),
    ({"STREAM_REDIS_SENTINELS": "a:26379,b", "STREAM_REDIS_SENTINEL_MASTER": "m"},
     "STREAM_REDIS_SENTINELS"),
    ({"STREAM_REDIS_SENTINELS": "a:26379", "STREAM_REDIS_SENTINEL_MASTER": "m",
      "STREAM_REDIS_CLUSTER": "true"}, "STREAM_REDIS_SENTINELS"),
])
def test_bad_sentinel_settings_are_named(monkeypatch: pytest.MonkeyPatch,
                                         values: dict[str, str], named: str) -> None:
    _env(monkeypatch, **values)
    with pytest.raises(SettingsError) as err:
        load()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"bad setting {named}"), message


def test_no_sentinels_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch)
    assert load().sentinel_list == []

"""`stream/settings.py`: every setting's default (the README's settings table, written
out here), lists and durations as they are parsed, flags over the environment, and a bad
value stopping the program with one line that names the variable (or the flag).

Covered elsewhere and not repeated here: Redis Sentinel settings
(test_reliability_settings.py), `STREAM_ENGINE` (test_engine_setting.py),
`STREAM_NO_EXTENSIONS` (test_compiled_switch.py), `STREAM_USER_ID_KEY_FILE`
(test_user_id_hashing.py), and the start errors of topics, brokers, Redis URLs, ports,
zones, batch wait and heartbeat as the commands print them
(tests/integration/test_start_errors.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stream.settings import Settings, SettingsError, load

#: Every setting's default, from the README's table.
DEFAULTS: dict[str, Any] = {
    "kafka_brokers": "127.0.0.1:9092",
    "redis_url": "redis://127.0.0.1:6379/0",
    "topics": "engagement.activity,engagement.conversions,engagement.cancellations,"
              "engagement.surveys",
    "dlq_topic": "engagement.dead-letter",
    "metrics_host": "0.0.0.0",
    "metrics_port": 9464,
    "timezone": "UTC",
    "max_lateness_days": 400,
    "consumer_group": "engagement-stream",
    "kafka_client": "aiokafka",
    "engine": "native",
    "redis_cluster": False,
    "redis_sentinels": "",
    "redis_sentinel_master": "",
    "redis_sentinel_password": None,
    "redis_shards": 0,  # 1 shard, or 16 with Redis Cluster (see test_shards)
    "user_buckets": 16384,
    "key_prefix": "es",
    "retention_days": 90,
    "batch_max": 10000,
    "batch_wait_ms": 100,
    "session_timeout_ms": 10000,
    "heartbeat_interval_ms": 3000,
    "stall_seconds": 120.0,
    "shutdown_seconds": 8.0,
    "metrics_cache_seconds": 1.0,
    "kafka_security_protocol": "PLAINTEXT",
    "kafka_sasl_mechanism": None,
    "kafka_sasl_username": None,
    "kafka_sasl_password": None,
    "kafka_ssl_cafile": None,
    "kafka_ssl_certfile": None,
    "kafka_ssl_keyfile": None,
    "kafka_ssl_password": None,
    "log_level": "INFO",
    "segments": "",
    "segment_max_values": 20,
    "campaign_max_series": 500,
    "user_id_key": None,
    "event_format": "native",
    "topic_formats": "",
    "no_extensions": False,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STREAM_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)


def plain(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load()
    message = str(err.value)
    assert "\n" not in message, message
    return message


# -- defaults -------------------------------------------------------------------------------


def test_every_setting_has_its_documented_default() -> None:
    settings = load()
    # a new setting needs its default written above (and in the README's table)
    assert set(DEFAULTS) == set(Settings.model_fields)
    assert {name: plain(getattr(settings, name)) for name in DEFAULTS} == DEFAULTS
    assert settings.topic_list == ("engagement.activity", "engagement.conversions",
                                   "engagement.cancellations", "engagement.surveys")
    assert settings.sentinel_list == []


@pytest.mark.parametrize(("env", "shards"), [
    ({}, 1), ({"STREAM_REDIS_CLUSTER": "true"}, 16), ({"STREAM_REDIS_SHARDS": "4"}, 4),
    ({"STREAM_REDIS_CLUSTER": "true", "STREAM_REDIS_SHARDS": "3"}, 3)])
def test_shards(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], shards: int) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load().shards == shards


# -- parsing -------------------------------------------------------------------------------


def test_lists_are_trimmed_of_blanks_and_empty_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_TOPICS", " orders , clicks,,orders.v2 ,")
    monkeypatch.setenv("STREAM_SEGMENTS", " plan, country ,plan,,")
    settings = load()
    assert settings.topics == "orders,clicks,orders.v2"
    assert settings.topic_list == ("orders", "clicks", "orders.v2")
    assert settings.segments == "plan,country"  # a repeated dimension counts once


def test_durations_take_fractions_and_their_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_STALL_SECONDS", "2.5")
    monkeypatch.setenv("STREAM_SHUTDOWN_SECONDS", "300")
    monkeypatch.setenv("STREAM_METRICS_CACHE_SECONDS", "0")
    monkeypatch.setenv("STREAM_BATCH_WAIT_MS", "10")
    settings = load()
    assert settings.stall_seconds == 2.5
    assert settings.shutdown_seconds == 300.0
    assert settings.metrics_cache_seconds == 0.0  # 0: figures read on each scrape
    assert settings.batch_wait_ms == 10


def test_booleans_and_numbers_from_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REDIS_CLUSTER", "yes")
    monkeypatch.setenv("STREAM_BATCH_MAX", "250")
    monkeypatch.setenv("STREAM_LOG_LEVEL", "DEBUG")
    settings = load()
    assert settings.redis_cluster is True
    assert settings.batch_max == 250
    assert settings.log_level == "DEBUG"


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_BATCH_MAX", "5")
    assert load({"batch_max": 7}).batch_max == 7
    assert load({"batch_max": None}).batch_max == 5  # a flag not given


def test_a_secret_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("redis://:s3cret-pw@redis:6379/2\n")
    monkeypatch.setenv("STREAM_REDIS_URL_FILE", str(secret))
    settings = load()
    assert settings.redis_url.get_secret_value() == "redis://:s3cret-pw@redis:6379/2"
    assert "s3cret-pw" not in repr(settings)


# -- bad values: one line naming the variable ------------------------------------------------


@pytest.mark.parametrize(("env", "named", "words"), [
    ({"STREAM_RETENTION_DAYS": "31"}, "STREAM_RETENTION_DAYS", "must be at least 32"),
    ({"STREAM_MAX_LATENESS_DAYS": "0"}, "STREAM_MAX_LATENESS_DAYS", "must be at least 1"),
    ({"STREAM_BATCH_MAX": "ten"}, "STREAM_BATCH_MAX", "must be a whole number (got 'ten')"),
    ({"STREAM_BATCH_MAX": "2.5"}, "STREAM_BATCH_MAX", "must be a whole number"),
    ({"STREAM_REDIS_SHARDS": "1025"}, "STREAM_REDIS_SHARDS", "must be at most 1024"),
    ({"STREAM_STALL_SECONDS": "0"}, "STREAM_STALL_SECONDS", "must be more than 0"),
    ({"STREAM_STALL_SECONDS": "soon"}, "STREAM_STALL_SECONDS", "must be a number"),
    ({"STREAM_SHUTDOWN_SECONDS": "301"}, "STREAM_SHUTDOWN_SECONDS", "must be at most 300"),
    ({"STREAM_BATCH_WAIT_MS": "9"}, "STREAM_BATCH_WAIT_MS", "must be at least 10"),
    ({"STREAM_REDIS_CLUSTER": "maybe"}, "STREAM_REDIS_CLUSTER", "must be true or false"),
    ({"STREAM_LOG_LEVEL": "LOUD"}, "STREAM_LOG_LEVEL", "(got 'LOUD')"),
    ({"STREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "STREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
    ({"STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "STREAM_KAFKA_SASL_MECHANISM",
     "is required with a SASL security protocol"),
    ({"STREAM_KEY_PREFIX": "es:v2"}, "STREAM_KEY_PREFIX",
     "may hold only letters, digits, '_', '.' and '-'"),
    ({"STREAM_CONSUMER_GROUP": ""}, "STREAM_CONSUMER_GROUP", "must not be empty"),
    ({"STREAM_TOPICS": " , "}, "STREAM_TOPICS", "no topic given"),
    ({"STREAM_SEGMENTS": "plan,sales region"}, "STREAM_SEGMENTS", "'sales region'"),
    ({"STREAM_SEGMENT_MAX_VALUES": "0"}, "STREAM_SEGMENT_MAX_VALUES", "must be at least 1"),
    ({"STREAM_CAMPAIGN_MAX_SERIES": "100001"}, "STREAM_CAMPAIGN_MAX_SERIES",
     "must be at most 100000"),
    ({"STREAM_USER_BUCKETS": "0"}, "STREAM_USER_BUCKETS", "must be at least 1"),
])
def test_a_bad_value_is_one_line_naming_its_variable(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str, words: str) -> None:
    message = refused(monkeypatch, **env)
    assert message.startswith(f"bad setting {named}: "), message
    assert words in message, message


def test_the_value_is_quoted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that names the bad value already does not repeat it."""
    message = refused(monkeypatch, STREAM_SEGMENTS="plan,sales region")
    assert message.count("sales region") == 1, message


def test_a_short_user_id_key_is_refused_without_echoing_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, STREAM_USER_ID_KEY="tooshort-key")
    assert message.startswith("bad setting STREAM_USER_ID_KEY: must be at least 16"), message
    assert "tooshort-key" not in message


def test_a_bad_redis_url_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, STREAM_REDIS_URL="http://:hunter2@redis:6379/0")
    assert message.startswith("bad setting STREAM_REDIS_URL: must start with redis://"), message
    assert "hunter2" not in message


def test_a_bad_flag_is_named_as_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_SEGMENT_MAX_VALUES", "5")
    with pytest.raises(SettingsError,
                       match=r"^bad setting --segment-max-values: must be at least 1$"):
        load({"segment_max_values": 0})


def test_an_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    message = refused(monkeypatch, STREAM_KAFKA_SASL_PASSWORD_FILE=str(missing))
    assert message.startswith(
        f"bad setting STREAM_KAFKA_SASL_PASSWORD_FILE: cannot read {missing}: "), message

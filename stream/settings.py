"""One frozen settings object, built once at start from flags and STREAM_* variables.

No other module reads the environment. Flags win over the environment; a bad value
stops the program at start with one line naming the setting (see `load`).
Secrets (`STREAM_REDIS_URL` with a password, `STREAM_KAFKA_SASL_PASSWORD`) may also come
from files: `STREAM_<NAME>_FILE=/path` reads the value from that file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPICS = (
    "engagement.activity,engagement.conversions,engagement.cancellations,engagement.surveys"
)
_SECRET_FILE_NAMES = ("redis_url", "kafka_sasl_password", "kafka_ssl_password")


class Settings(BaseSettings):
    """Every setting of the worker, demo and report. Durations are in seconds unless
    the name says otherwise."""

    model_config = SettingsConfigDict(env_prefix="STREAM_", frozen=True, extra="forbid")

    kafka_brokers: str = Field("127.0.0.1:9092", description="bootstrap servers host:port,...")
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"),
                                 description="redis:// or rediss:// URL (may hold a password)")
    topics: str = Field(DEFAULT_TOPICS, description="comma-separated topics to consume")
    dlq_topic: str = Field("engagement.dead-letter", description="dead-letter topic")
    metrics_host: str = Field("0.0.0.0", description="bind address of /metrics")
    metrics_port: int = Field(9464, ge=0, le=65535, description="port of /metrics (0: any)")
    timezone: str = Field("UTC", description="IANA zone that defines calendar days")
    max_lateness_days: int = Field(400, ge=1, le=3650, description="oldest accepted event age")
    consumer_group: str = Field("engagement-stream", min_length=1)
    kafka_client: Literal["aiokafka", "confluent"] = Field(
        "aiokafka", description="Kafka client of the worker's consumer: aiokafka, or "
                                "confluent (confluent-kafka, the `confluent` extra)")
    engine: Literal["native", "faust"] = Field(
        "native", description="native (the batch worker) or faust (the same worker as a "
                              "faust-streaming application, the `faust` extra)")
    redis_cluster: bool = Field(False, description="true for Redis Cluster")
    redis_shards: int = Field(0, ge=0, le=1024,
                              description="hash-tag shards of per-user state; 0 = 1, or 16 "
                                          "with Redis Cluster; fixed for the life of a store")
    user_buckets: int = Field(16384, ge=1, le=1 << 24,
                              description="hashes per store holding per-user records; "
                                          "fixed for the life of a store")
    key_prefix: str = Field("es", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    retention_days: int = Field(90, ge=32, le=3650, description="days per-day keys are kept")
    batch_max: int = Field(10000, ge=1, le=1_000_000, description="messages per batch, at most")
    batch_wait_ms: int = Field(100, ge=0, le=60_000, description="longest wait to fill a batch")
    session_timeout_ms: int = Field(10000, ge=1000, le=300_000)
    heartbeat_interval_ms: int = Field(3000, ge=100, le=100_000)
    stall_seconds: float = Field(120.0, gt=0,
                                 description="lag > 0 without progress this long = stalled")
    shutdown_seconds: float = Field(8.0, gt=0, le=300,
                                    description="longest clean stop after SIGTERM or a stall; "
                                                "then the process exits anyway")
    metrics_cache_seconds: float = Field(1.0, ge=0, le=300,
                                         description="figures are read from Redis in the "
                                                     "background this often (0: on scrape)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_password: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    segments: str = Field("", description="comma-separated `props` keys to split figures by "
                                          "(e.g. plan,platform,country); empty: none")
    segment_max_values: int = Field(20, ge=1, le=1000,
                                    description="values per segment dimension; later ones "
                                                "count as `other`")
    campaign_max_series: int = Field(500, ge=0, le=100_000,
                                     description="campaigns with a conversion-ratio series "
                                                 "of their own (most visits over 30 days); "
                                                 "the others count as `other`")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("kafka_client")
    @classmethod
    def _kafka_client(cls, value: str) -> str:
        if value == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
            raise ValueError("confluent needs the confluent-kafka package "
                             "(pip install 'engagement-stream[confluent]')")
        return value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        # faust replaces its module in sys.modules by one without a spec once imported
        if value == "faust" and "faust" not in sys.modules and (
                importlib.util.find_spec("faust") is None):
            raise ValueError("faust needs the faust-streaming package "
                             "(pip install 'engagement-stream[faust]')")
        return value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: str) -> str:
        names = [t.strip() for t in value.split(",") if t.strip()]
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"segment dimension {name!r} must be 1-64 letters, digits, "
                                 f"'_', '.' or '-'")
        return ",".join(dict.fromkeys(names))

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: str) -> str:
        names = [t.strip() for t in value.split(",") if t.strip()]
        if not names:
            raise ValueError("no topic given")
        return ",".join(names)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("kafka_brokers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{part.strip()!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def topic_list(self) -> tuple[str, ...]:
        return tuple(self.topics.split(","))

    @property
    def shards(self) -> int:
        """Hash-tag shards of per-user state (1 on one Redis, 16 on a cluster by default)."""
        if self.redis_shards:
            return self.redis_shards
        return 16 if self.redis_cluster else 1

    def kafka_options(self) -> dict[str, Any]:
        """Connection options for aiokafka clients (security settings only when set)."""
        opts: dict[str, Any] = {"bootstrap_servers": self.kafka_brokers,
                                "security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                opts["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if "SSL" in self.kafka_security_protocol:
            from aiokafka.helpers import create_ssl_context

            opts["ssl_context"] = create_ssl_context(
                cafile=self.kafka_ssl_cafile, certfile=self.kafka_ssl_certfile,
                keyfile=self.kafka_ssl_keyfile,
                password=(self.kafka_ssl_password.get_secret_value()
                          if self.kafka_ssl_password else None),
            )
        return opts


class SettingsError(Exception):
    """A bad setting; the message is one line naming it."""


def _from_files(env: Mapping[str, str]) -> dict[str, str]:
    """Values of STREAM_<NAME>_FILE variables (for secrets mounted as files)."""
    out: dict[str, str] = {}
    for name in _SECRET_FILE_NAMES:
        path = env.get(f"STREAM_{name.upper()}_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    out[name] = fh.read().strip()
            except OSError as exc:
                raise SettingsError(
                    f"bad setting STREAM_{name.upper()}_FILE: cannot read {path}: "
                    f"{exc.strerror}"
                ) from exc
    return out


def load(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings: `overrides` (from flags; None values ignored) win over the
    STREAM_* environment, which wins over the defaults. Raises SettingsError."""
    values: dict[str, Any] = _from_files(os.environ)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "setting"
        if not err["loc"]:  # a check across fields names the field it blames first
            first = str(err["msg"]).removeprefix("Value error, ").split(" ", 1)[0]
            if first in Settings.model_fields:
                field = first
        source = "--" + field.replace("_", "-") if field in (overrides or {}) else (
            f"STREAM_{field.upper()}")
        msg = str(err["msg"]).removeprefix("Value error, ")
        given = err.get("input")
        if isinstance(given, str) and "password" not in field and field != "redis_url":
            msg += f" (got {given!r})"
        raise SettingsError(f"bad setting {source}: {msg}") from None

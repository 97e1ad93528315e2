"""One frozen settings object, built once at start from flags and STREAM_* variables.

The settings validate and hold values only: the Kafka clients' options are rendered from
them by `stream.kafka.config`. No other module reads the environment. Flags win over the
environment; a bad value stops the program at start with one line naming the setting (see
`load`).
Secrets (`STREAM_REDIS_URL` with a password, `STREAM_KAFKA_SASL_PASSWORD`) may also come
from files: `STREAM_<NAME>_FILE=/path` reads the value from that file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPICS = (
    "engagement.activity,engagement.conversions,engagement.cancellations,engagement.surveys"
)
if TYPE_CHECKING:
    from .formats import Mapper

_SECRET_FILE_NAMES = ("redis_url", "kafka_sasl_password", "kafka_ssl_password", "user_id_key",
                      "redis_sentinel_password")


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
    redis_sentinels: str = Field("", description="Redis Sentinel addresses host:port,...; the "
                                                 "master's address then comes from them")
    redis_sentinel_master: str = Field("", description="the master name the sentinels monitor")
    redis_sentinel_password: SecretStr | None = Field(
        None, description="password of the sentinels themselves (the master's is in the URL)")
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
    user_id_key: SecretStr | None = Field(None, description="secret key: user ids are stored "
                                                            "as their HMAC-SHA-256 under it")

    @field_validator("user_id_key")
    @classmethod
    def _user_id_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value
    event_format: str = Field("native", description="format of the topics' messages: native "
                                                   "(section 1), segment, or the path of a "
                                                   "mapping file (docs/formats.md)")
    topic_formats: str = Field("", description="per-topic formats, topic=format,...; they "
                                               "override event_format")
    no_extensions: bool = Field(False, description="true: run the pure Python paths only, "
                                                   "every compiled part off (read at import "
                                                   "by stream/_compiled.py)")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("not a known IANA time zone: use a name such as UTC or "
                             "Europe/Berlin") from exc
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

    @field_validator("event_format")
    @classmethod
    def _event_format(cls, value: str) -> str:
        from . import formats

        try:
            formats.load(value.strip())
        except formats.FormatError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("topic_formats")
    @classmethod
    def _topic_formats(cls, value: str) -> str:
        from . import formats

        try:
            for fmt in formats.parse_topic_formats(value).values():
                formats.load(fmt)
        except formats.FormatError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: str) -> str:
        names = [t.strip() for t in value.split(",") if t.strip()]
        if not names:
            raise ValueError("no topic given")
        for name in names:
            _check_topic_name(name)
        return ",".join(names)

    @field_validator("dlq_topic")
    @classmethod
    def _dlq_topic(cls, value: str) -> str:
        _check_topic_name(value)
        return value

    @field_validator("batch_wait_ms")
    @classmethod
    def _batch_wait(cls, value: int) -> int:
        # Refused rather than raised to a floor: a setting silently changed would surprise.
        if value < MIN_BATCH_WAIT_MS:
            raise ValueError(f"must be at least {MIN_BATCH_WAIT_MS}: below that an idle worker "
                             f"polls without pause and burns a whole core (default 100)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        problem = _redis_url_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("kafka_brokers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{part.strip()!r} is not host:port (e.g. kafka:9092)")
            if not 1 <= int(port) <= 65535:
                raise ValueError(f"{part.strip()!r} has port {port}: a port is 1-65535")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        for part in parts:
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{part!r} is not host:port")
        return ",".join(parts)

    @model_validator(mode="after")
    def _sentinel(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("redis_sentinel_master is required with STREAM_REDIS_SENTINELS "
                             "(the master name the sentinels monitor)")
        if self.redis_sentinel_master and not self.redis_sentinels:
            raise ValueError("redis_sentinels is required with STREAM_REDIS_SENTINEL_MASTER "
                             "(host:port,... of the sentinels)")
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError("redis_sentinels cannot be combined with STREAM_REDIS_CLUSTER=true")
        return self

    @property
    def sentinel_list(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs (empty: no Sentinel)."""
        out = []
        for part in filter(None, self.redis_sentinels.split(",")):
            host, _, port = part.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    @model_validator(mode="after")
    def _sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")
        return self

    @model_validator(mode="after")
    def _dlq_not_consumed(self) -> Settings:
        # The worker would read its own dead letters back and dead-letter them again,
        # forever, the counter climbing.
        if self.dlq_topic in self.topic_list:
            raise ValueError(f"dlq_topic {self.dlq_topic!r} is also one of the consumed "
                             f"STREAM_TOPICS, so dead letters would be read back and "
                             f"dead-lettered forever: give the dead letters a topic of their "
                             f"own")
        return self

    @model_validator(mode="after")
    def _heartbeat(self) -> Settings:
        # Kafka expects heartbeats at most a third of the session timeout apart, so a
        # member survives a lost heartbeat or two; at or above it the group evicts
        # healthy members.
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(f"heartbeat_interval_ms must be at most a third of "
                             f"STREAM_SESSION_TIMEOUT_MS ({self.session_timeout_ms}), not "
                             f"{self.heartbeat_interval_ms}: lower it to "
                             f"{self.session_timeout_ms // 3} or less, or raise the session "
                             f"timeout")
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def topic_list(self) -> tuple[str, ...]:
        return tuple(self.topics.split(","))

    def format_of(self, topic: str) -> Mapper | None:
        """The `formats.Mapper` of `topic`'s format, None when it is `native` (the
        formats were checked at start, so this does not raise)."""
        from . import formats

        chosen = formats.parse_topic_formats(self.topic_formats)
        return formats.load(chosen.get(topic, self.event_format))

    @property
    def shards(self) -> int:
        """Hash-tag shards of per-user state (1 on one Redis, 16 on a cluster by default)."""
        if self.redis_shards:
            return self.redis_shards
        return 16 if self.redis_cluster else 1


#: Below this STREAM_BATCH_WAIT_MS an idle worker polls Kafka without pause.
MIN_BATCH_WAIT_MS = 10

#: Kafka's rule for topic names (and `.`/`..` are refused).
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why `name` is not a Kafka topic name (Kafka's own rule), or None. A bad name would
    otherwise only show as a flood of client errors with nothing consumed."""
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        return (f"{name!r} is not a Kafka topic name: use 1-249 letters, digits, '.', '_' "
                f"or '-' (but not '.' or '..')")
    return None


def _check_topic_name(name: str) -> None:
    problem = topic_name_problem(name)
    if problem is not None:
        raise ValueError(problem)


#: Query options of a Redis URL taken as text (besides those redis-py parses as numbers
#: or flags itself, `URL_QUERY_ARGUMENT_PARSERS`).
_REDIS_TEXT_OPTIONS = frozenset({
    "client_name", "username", "password", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data",
    "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_cert_reqs", "ssl_ciphers",
})
_SSL_CERT_REQS = ("none", "optional", "required")


def _redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, checked as redis-py will read it, or None. An unknown
    query option would otherwise fail at the first connection (a TypeError deep in
    redis-py), and a bad port or database would be a traceback or silently ignored."""
    import inspect
    from urllib.parse import urlsplit

    from redis.connection import URL_QUERY_ARGUMENT_PARSERS, Connection, parse_url

    try:
        parsed = parse_url(url)  # type: ignore[no-untyped-call]
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if "port" in str(exc).lower():
            return "the port is not a number 1-65535: use redis://HOST:PORT/DB"
        return f"{exc}"[:1].lower() + f"{exc}"[1:].rstrip(".")
    if parts.scheme != "unix":
        if not parts.hostname:
            return "no host: use redis://HOST:PORT/DB"
        if port == 0:
            return "port 0: a port is 1-65535"
        path = parts.path.strip("/")
        if path and not path.isdigit():
            return f"database {path!r} is not a number: use redis://HOST:PORT/0"
    cls = parsed.get("connection_class", Connection)
    accepted = {name for klass in cls.__mro__ if "__init__" in vars(klass)
                for name in inspect.signature(klass.__init__).parameters}
    known = (set(URL_QUERY_ARGUMENT_PARSERS) | _REDIS_TEXT_OPTIONS) & (accepted | {
        "max_connections"})
    for name in parsed:
        if name in ("host", "port", "path", "db", "connection_class", "username",
                    "password"):
            continue
        if name not in known:
            hint = (" (TLS options need rediss://)" if name.startswith("ssl_")
                    and parts.scheme != "rediss" else "")
            return f"unknown query option {name!r}{hint}: see the settings in the README"
    reqs = parsed.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _SSL_CERT_REQS:
        return "ssl_cert_reqs must be none, optional or required"
    return None


#: Plain words for pydantic's error types (the setting name comes before them).
_PLAIN_ERRORS = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be {expected}",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "may hold only letters, digits, '_', '.' and '-'",
}


#: The switch that turns every compiled part off. The compiled modules are chosen when
#: the package is imported, before any command builds its Settings, so this one variable
#: is also read at import, here, by `no_extensions_requested` (for stream/_compiled.py);
#: `Settings.no_extensions` validates the same value at start, so a bad one still stops
#: the program in one line.
NO_EXTENSIONS_VARIABLE = "STREAM_NO_EXTENSIONS"


def no_extensions_requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether `STREAM_NO_EXTENSIONS` asks for the pure Python paths: any value pydantic
    reads as true (`1`, `true`, `yes`, `on`, ...); anything else leaves them on (a value
    that is not a boolean at all is refused when the settings are loaded)."""
    value = env.get(NO_EXTENSIONS_VARIABLE, "").lower()
    return value in ("1", "true", "t", "yes", "y", "on")


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
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:  # a check across fields names the field it blames first
            first = msg.split(" ", 1)[0]
            if first in Settings.model_fields:
                field = first
                msg = msg.split(" ", 1)[1]
        plain = _PLAIN_ERRORS.get(str(err["type"]))
        if plain is not None:
            msg = plain.format(**err.get("ctx", {}))
        source = "--" + field.replace("_", "-") if field in (overrides or {}) else (
            f"STREAM_{field.upper()}")
        given = err.get("input")
        if (isinstance(given, str) and "password" not in field
                and field not in ("redis_url", "user_id_key")
                and not any(repr(part.strip()) in msg for part in given.split(","))):
            msg += f" (got {given!r})"  # once: not when the message names the value already
        raise SettingsError(f"bad setting {source}: {msg}") from None

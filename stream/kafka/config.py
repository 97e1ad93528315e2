"""One Kafka connection config, built once from the settings and rendered for both clients.

The settings only validate and hold values; this module is the one place that turns them
into client options: `KafkaConfig.aiokafka` for aiokafka's consumers, producers and admin
clients (the worker's default source, backfill's bounded source and its producer, the
dead-letter producer, `offsetrange.probe`, `doctor`, `send`, `check-format`, the TLS check
in `kafka/tls.py`, the faust engine's credentials), and `KafkaConfig.librdkafka` for the
confluent source. Security (protocol, SASL, TLS files), fetch sizes and the group's
session and heartbeat are written here once, so the two clients cannot drift apart.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from ..settings import Settings

#: Largest fetch response, and largest share of it per partition, of the worker's
#: consumers (both clients): a whole `batch_max` batch usually comes in one fetch.
FETCH_MAX_BYTES = 64 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
#: The client id librdkafka's consumer gives the brokers (aiokafka's clients keep their
#: library's default unless a caller names one, as `doctor` does).
CLIENT_ID = "engagement-stream"
DOCTOR_CLIENT_ID = "engagement-stream-doctor"
#: librdkafka's default (1000 ms) makes `consume()` wait that long whenever its fetch
#: queue is below the thresholds; 100 ms keeps batches flowing.
FETCH_QUEUE_BACKOFF_MS = 100


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """How every Kafka client of the program connects (passwords kept out of `repr`)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    group: str = "engagement-stream"
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    fetch_max_bytes: int = FETCH_MAX_BYTES
    max_partition_fetch_bytes: int = MAX_PARTITION_FETCH_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConfig:
        return cls(
            bootstrap=settings.kafka_brokers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=(settings.kafka_sasl_password.get_secret_value()
                           if settings.kafka_sasl_password is not None else None),
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_password=(settings.kafka_ssl_password.get_secret_value()
                          if settings.kafka_ssl_password is not None else None),
            group=settings.consumer_group,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
        )

    @property
    def uses_tls(self) -> bool:
        return "SSL" in self.security_protocol

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the aiokafka clients get (CA file, client certificate, host
        name checked), None without TLS. A new one per call, as each client holds its own."""
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile,
            password=self.ssl_password)
        return context

    def aiokafka(self, *, fetch: bool = False, group: bool = False,
                 client_id: str | None = None) -> dict[str, Any]:
        """Keyword options of an aiokafka client: the connection (security settings only
        when set); `fetch`: the worker's fetch sizes; `group`: the consumer group's session
        and heartbeat; `client_id`: a name of its own for the brokers' logs."""
        opts: dict[str, Any] = {"bootstrap_servers": self.bootstrap,
                                "security_protocol": self.security_protocol}
        if client_id is not None:
            opts["client_id"] = client_id
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                opts["sasl_plain_password"] = self.sasl_password
        if self.uses_tls:
            opts["ssl_context"] = self.ssl_context()
        if fetch:
            opts["fetch_max_bytes"] = self.fetch_max_bytes
            opts["max_partition_fetch_bytes"] = self.max_partition_fetch_bytes
        if group:
            opts["session_timeout_ms"] = self.session_timeout_ms
            opts["heartbeat_interval_ms"] = self.heartbeat_interval_ms
        return opts

    def librdkafka(self, group: str | None = None) -> dict[str, Any]:
        """The confluent consumer's configuration: the group (`group` or the settings'),
        manual commits (Redis holds the truth, Kafka's offsets are a hint), earliest reset,
        session, fetch sizes and security settings."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": group or self.group,
            "client.id": CLIENT_ID,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "partition.assignment.strategy": "roundrobin",
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            "fetch.max.bytes": self.fetch_max_bytes,
            "max.partition.fetch.bytes": self.max_partition_fetch_bytes,
            # A corrupt batch is reported (then read by the worker's reader, see
            # `kafka/confluent.py`) rather than handed over as messages, as with the
            # default client.
            "check.crcs": True,
            "security.protocol": self.security_protocol,
            "logger": logging.getLogger("stream.kafka.librdkafka"),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                conf["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                conf["sasl.password"] = self.sasl_password
        if self.uses_tls:
            for key, value in (("ssl.ca.location", self.ssl_cafile),
                               ("ssl.certificate.location", self.ssl_certfile),
                               ("ssl.key.location", self.ssl_keyfile)):
                if value:
                    conf[key] = value
            if self.ssl_password is not None:
                conf["ssl.key.password"] = self.ssl_password
        return conf


"""`python -m stream doctor`: checks a configuration against the real servers before a
first deployment, one line per check, each failure with its fix.

What is checked, in order (a check that needs an earlier one skips when it failed):
1. the Kafka brokers answer;
2. every topic of STREAM_TOPICS and the dead-letter topic exists (its partitions);
3. the latest messages of every input topic parse in the configured format;
4. the consumer group's state, and the lag of every topic: the messages after what the
   store in Redis has applied (the worker resumes from Redis, not from Kafka's commits);
5. Redis answers, and its version;
6. Redis persists with the append-only file (without it a restart loses the figures and
   the offsets applied with them);
7. Redis never evicts keys (`maxmemory-policy noeviction`);
8. the store's fixed settings recorded in Redis (zone, shards, ...) match these settings;
9. the metrics port is free.

The exit code is 0 only when every check passes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from .events import DeadLetter, decode
from .kafka.config import DOCTOR_CLIENT_ID, KafkaConfig
from .settings import Settings
from .store.store import Store, StoreMismatch
from .timebuckets import SYSTEM_CLOCK

#: Latest messages read from each partition for the parse check.
SAMPLE_PER_PARTITION = 20
#: Seconds a broker, a topic or Redis has to answer.
TIMEOUT_SECONDS = 10.0
#: Dead-letter reasons that mean "not in this format"; `late` and `future` messages
#: parse, only their time is outside the window.
FORMAT_REASONS = frozenset({"invalid_json", "invalid_event", "unmapped"})
#: The Redis version the store's scripts are written and tested for.
MIN_REDIS = (6, 2)

Decoder = Callable[[bytes | None], str | None]
"""A configured format's decoding, as the doctor needs it: a message value -> None when
it decodes into an event (or is deliberately ignored), else its dead-letter reason."""


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether it passed, and the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"{mark} {self.name:<14} {self.detail}"
        return f"{text}; fix: {self.fix}" if not self.ok and self.fix else text


def native_decoder(settings: Settings) -> Decoder:
    """The native format (contract section 1) as a Decoder."""
    lateness_ms = settings.max_lateness_days * 86_400_000

    def reason(value: bytes | None) -> str | None:
        result = decode(value, SYSTEM_CLOCK.now_ms(), lateness_ms)
        return result.reason if isinstance(result, DeadLetter) else None

    return reason


@dataclass
class ParseResult:
    """How a sample of messages decoded: counts by reason (None: decoded)."""

    total: int = 0
    reasons: Counter[str | None] = field(default_factory=Counter)

    @property
    def unreadable(self) -> int:
        """Messages that are not in the format at all."""
        return sum(n for r, n in self.reasons.items() if r in FORMAT_REASONS)


def check_parse(values: Sequence[bytes | None], decoder: Decoder) -> ParseResult:
    """Decode every value with the configured format's `decoder`."""
    result = ParseResult(len(values))
    for value in values:
        result.reasons[decoder(value)] += 1
    return result


@dataclass
class TopicInfo:
    """One topic as the broker describes it, with its latest messages."""

    partitions: int
    highwater: dict[int, int] = field(default_factory=dict)
    latest: list[bytes | None] = field(default_factory=list)


# ----------------------------------------------------------------------------- Kafka


async def _describe(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Partitions of each existing topic among `topics` (raises when no broker answers)."""
    admin = AIOKafkaAdminClient(request_timeout_ms=int(TIMEOUT_SECONDS * 1000),
                                **KafkaConfig.from_settings(settings).aiokafka(client_id=DOCTOR_CLIENT_ID))
    try:
        await asyncio.wait_for(admin.start(), TIMEOUT_SECONDS)
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        out: dict[str, int] = {}
        if wanted:
            for d in await admin.describe_topics(wanted):
                if d["error_code"] == 0:
                    out[d["topic"]] = len(d["partitions"])
        return out
    finally:
        await admin.close()


async def _group_state(settings: Settings) -> str:
    """The consumer group's state as the broker reports it (`Empty`, `Stable`, ...)."""
    admin = AIOKafkaAdminClient(request_timeout_ms=int(TIMEOUT_SECONDS * 1000),
                                **KafkaConfig.from_settings(settings).aiokafka(client_id=DOCTOR_CLIENT_ID))
    try:
        await asyncio.wait_for(admin.start(), TIMEOUT_SECONDS)
        described = await admin.describe_consumer_groups([settings.consumer_group])
        for response in described:
            for group in response.groups:
                error, _, state, _, _, members = group[:6]
                if error:
                    return f"unknown (error {error})"
                return f"{state or 'unknown'}, {len(members)} member(s)"
        return "unknown"
    finally:
        await admin.close()


async def _latest(settings: Settings, topics: dict[str, int]) -> dict[str, TopicInfo]:
    """Highwater marks (from a fetch: some brokers answer ListOffsets "latest" wrongly)
    and the last SAMPLE_PER_PARTITION messages of every partition of `topics`."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=100,
                                request_timeout_ms=int(TIMEOUT_SECONDS * 1000),
                                **KafkaConfig.from_settings(settings).aiokafka(
                                    client_id=DOCTOR_CLIENT_ID))
    out = {t: TopicInfo(n) for t, n in topics.items()}
    try:
        await asyncio.wait_for(consumer.start(), TIMEOUT_SECONDS)
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        if not tps:
            return out
        consumer.assign(tps)
        # 1. learn each partition's highwater from a first fetch of one message;
        await consumer.seek_to_beginning(*tps)
        begin = {tp: await consumer.position(tp) for tp in tps}
        deadline = time.monotonic() + TIMEOUT_SECONDS
        marks: dict[TopicPartition, int | None] = {}
        while time.monotonic() < deadline:
            await consumer.getmany(*tps, timeout_ms=200, max_records=1)
            marks = {tp: consumer.highwater(tp) for tp in tps}
            if all(m is not None for m in marks.values()):
                break
        # 2. then read from the last SAMPLE_PER_PARTITION offsets up to it.
        todo: dict[TopicPartition, int] = {}
        for tp in tps:
            high = marks.get(tp)
            out[tp.topic].highwater[tp.partition] = int(high or 0)
            if high is not None and high > begin[tp]:
                consumer.seek(tp, max(begin[tp], high - SAMPLE_PER_PARTITION))
                todo[tp] = high
        while todo and time.monotonic() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < todo.get(tp, -1):
                        out[tp.topic].latest.append(record.value)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
        return out
    finally:
        await consumer.stop()


def kafka_checks(settings: Settings, decoder_for: Callable[[str], Decoder],
                 store: Store | None) -> list[Check]:
    """Checks 1-4: `decoder_for(topic)` is the format configured for the topic; `store`
    (None: Redis unreachable) gives the applied offsets."""
    topics = list(dict.fromkeys([*settings.topic_list, settings.dlq_topic]))
    brokers = settings.kafka_brokers
    try:
        found = asyncio.run(_describe(settings, topics))
    except Exception as exc:  # any failure to talk to the brokers is this check's answer
        return [Check("kafka", False, f"no broker of {brokers} answers ({why(exc)})",
                      "start Kafka, or set STREAM_KAFKA_BROKERS (and the STREAM_KAFKA_"
                      "SECURITY_PROTOCOL/SASL/SSL settings) to reach it")]
    checks = [Check("kafka", True, f"{brokers} answers")]
    for topic in topics:
        if topic in found:
            checks.append(Check("topic", True, f"{topic}: {found[topic]} partition(s)"))
        else:
            setting = "STREAM_DLQ_TOPIC" if topic == settings.dlq_topic else "STREAM_TOPICS"
            checks.append(Check("topic", False, f"{topic} does not exist",
                                f"create it (kafka-topics.sh --bootstrap-server {brokers} "
                                f"--create --topic {topic} --partitions 4), or correct "
                                f"{setting}"))
    inputs = {t: found[t] for t in settings.topic_list if t in found}
    try:
        infos = asyncio.run(_latest(settings, inputs))
    except Exception as exc:
        return [*checks, Check("messages", False, f"cannot read the topics ({why(exc)})",
                               "give this client read access to the topics")]
    for topic, info in infos.items():
        checks.append(_parse_line(topic, check_parse(info.latest, decoder_for(topic))))
    checks.append(_group_line(settings, infos, store))
    return checks


def _parse_line(topic: str, result: ParseResult) -> Check:
    if result.total == 0:
        return Check("messages", True, f"{topic}: no messages yet")
    bad = result.unreadable
    summary = ", ".join(f"{r or 'decoded'} {n}" for r, n in result.reasons.most_common())
    if bad == 0:
        return Check("messages", True, f"{topic}: the latest {result.total} message(s) "
                                       f"parse ({summary})")
    return Check("messages", False, f"{topic}: {bad} of the latest {result.total} message(s) "
                                    f"do not parse ({summary})",
                 "make the producers send the configured format, or configure the format "
                 "they send; messages that do not parse go to the dead-letter topic")


def _group_line(settings: Settings, infos: dict[str, TopicInfo], store: Store | None) -> Check:
    group = settings.consumer_group
    try:
        state = asyncio.run(_group_state(settings))
    except Exception as exc:
        state = f"not described ({why(exc)})"
    lag = _lag(infos, store)
    return Check("consumer group", True, f"{group}: {state}; {lag}")


def _lag(infos: dict[str, TopicInfo], store: Store | None) -> str:
    """Messages after what the store has applied, over every partition."""
    if store is None:
        return "lag unknown (Redis unreachable)"
    srcs = [f"{t}/{p}" for t, info in infos.items() for p in info.highwater]
    try:
        applied = store.load_offsets(srcs)
    except redis.exceptions.RedisError:
        return "lag unknown (Redis unreachable)"
    total = 0
    for topic, info in infos.items():
        for partition, high in info.highwater.items():
            resume = store.resume_offset(applied, f"{topic}/{partition}")
            total += max(0, high - (resume or 0))
    if not applied:
        return f"nothing applied yet: {total:,} message(s) to fold from the earliest"
    return f"lag {total:,} message(s) after the offsets applied in Redis"


# ----------------------------------------------------------------------------- Redis


def redis_checks(settings: Settings, store: Store) -> list[Check]:
    """Checks 5-8 (the caller has opened `store` on the settings' Redis)."""
    try:
        server = _info(store, "server")
        persistence = _info(store, "persistence")
        memory = _info(store, "memory")
    except redis.exceptions.RedisError as exc:
        return [Check("redis", False, f"Redis cannot be used ({why(exc)})",
                      "start Redis, or set STREAM_REDIS_URL (redis://[:password@]host:"
                      "port/db, rediss:// for TLS) to reach it")]
    version = str(server.get("redis_version", "?"))
    numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    checks = [Check("redis", numbers >= MIN_REDIS, f"version {version}",
                    f"use Redis {'.'.join(map(str, MIN_REDIS))} or later")]
    if str(persistence.get("aof_enabled", "0")) == "1":
        checks.append(Check("persistence", True, "append-only file on"))
    else:
        checks.append(Check("persistence", False,
                            "append-only file off: a restart loses the store's latest writes",
                            "set appendonly yes and appendfsync everysec (redis.conf, or "
                            "CONFIG SET appendonly yes then CONFIG REWRITE)"))
    policy = str(memory.get("maxmemory_policy", "?"))
    limit = int(memory.get("maxmemory", 0) or 0)
    used = memory.get("used_memory_human", "?")
    sized = f"maxmemory {limit:,} bytes" if limit else "no maxmemory"
    if policy == "noeviction":
        checks.append(Check("memory", True, f"policy noeviction, {sized}, {used} used"))
    else:
        checks.append(Check("memory", False,
                            f"policy {policy}: Redis may evict the store's keys when full",
                            "set maxmemory-policy noeviction (redis.conf, or CONFIG SET "
                            "maxmemory-policy noeviction)"))
    try:
        checks.append(store_check(store))
    except redis.exceptions.RedisError as exc:
        checks.append(Check("store", False, f"cannot read the store's settings ({why(exc)})",
                            "give this Redis user read access to the store's keys"))
    return checks


def _info(store: Store, section: str) -> dict[str, Any]:
    """INFO `section`; on a cluster, the first primary's answer."""
    info: dict[str, Any] = store.client.info(section)
    if info and all(isinstance(v, dict) for v in info.values()):  # per node (cluster)
        info = next(iter(info.values()))
    return info


def store_check(store: Store) -> Check:
    """The store's recorded fixed settings against these settings, over whatever fields
    the store records (`StoreParams.as_meta`)."""
    prefix = store.keys.prefix
    stored = {_s(k): _s(v) for k, v in store.client.hgetall(store.keys.meta).items()}
    if not stored:
        return Check("store", True, f"no store under key prefix {prefix!r} yet: the first "
                                    f"worker records its settings")
    try:
        store.check_meta(record=False)
    except StoreMismatch as exc:
        return Check("store", False, str(exc).split("; ", 1)[0],
                     str(exc).split("; ", 1)[1] if "; " in str(exc) else "")
    fields = " ".join(f"{k}={stored[k]}" for k in store.params.as_meta() if k in stored)
    return Check("store", True, f"prefix {prefix!r} matches: {fields}")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- the rest


def port_check(settings: Settings) -> Check:
    """Whether the metrics port can be bound (0: any port, always)."""
    host, port = settings.metrics_host, settings.metrics_port
    if port == 0:
        return Check("metrics port", True, "0: any free port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Check("metrics port", False, f"{host}:{port} is taken ({exc.strerror})",
                         "stop what listens there, or set STREAM_METRICS_PORT to a free port")
    return Check("metrics port", True, f"{host}:{port} is free")


def why(exc: BaseException) -> str:
    """An exception in one line, its type named once."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.removeprefix(name).lstrip(": ")
    return f"{name}: {text}" if text else name


def run_checks(settings: Settings, store: Store,
               decoder_for: Callable[[str], Decoder] | None = None) -> list[Check]:
    """Every check against the servers of `settings`; the messages of a topic are
    checked with `decoder_for(topic)` (default: the native format for every topic)."""
    redis_part = redis_checks(settings, store)
    reachable = len(redis_part) > 1  # an unusable Redis is one failed line
    if decoder_for is None:
        native = native_decoder(settings)

        def decoder_for(topic: str) -> Decoder:
            return native

    kafka_part = kafka_checks(settings, decoder_for, store if reachable else None)
    return [*kafka_part, *redis_part, port_check(settings)]


def doctor(settings: Settings, store: Store,
           decoder_for: Callable[[str], Decoder] | None = None) -> int:
    """Print one line per check; 0 when every check passes, else 1."""
    checks = run_checks(settings, store, decoder_for)
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(not c.ok for c in checks)
    print(f"{len(checks) - failed} of {len(checks)} checks passed" if failed
          else f"all {len(checks)} checks passed")
    return 1 if failed else 0

"""`python -m stream check-format`: check a mapping file before deploying it, and show
what each message of a sample becomes (the event and the rule that built it, or why it
is ignored or dead-lettered), exactly as the worker would decide it.

The sample is a JSONL file (one message value a line) or the latest N messages of a
topic; nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

from aiokafka.errors import KafkaError

from ..events import EVENT_TYPES, DeadLetter, Event, Ignored, decode
from ..timebuckets import SYSTEM_CLOCK
from . import NAMED_PRESETS, NATIVE, FormatError, load, presets
from .mapper import Mapper, Outcome

DAY_MS = 86_400_000


def problems_of(fmt: str) -> list[str]:
    """Every problem of format `fmt`, one line each (empty: it is usable)."""
    try:
        load(fmt)
    except FormatError as exc:
        return [f"{exc.source}: {p}" for p in exc.problems]
    return []


def explain_native(value: bytes | None, now_ms: int, lateness_ms: int) -> Outcome:
    return Outcome(decode(value, now_ms, lateness_ms), None, None)


def event_json(event: Event) -> dict[str, Any]:
    """A section-1 object of `event` (`ts` as epoch milliseconds)."""
    out: dict[str, Any] = {"event_id": event.event_id, "type": EVENT_TYPES[event.type_code],
                           "user_id": event.user_id, "ts": event.ts_ms}
    for name in ("campaign", "survey", "score", "props"):
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    return out


def describe(n: int, outcome: Outcome) -> dict[str, Any]:
    """One sample message's outcome as a JSON-able record."""
    item = outcome.item
    rec: dict[str, Any] = {"message": n}
    if outcome.rule is not None:
        rec["rule"] = outcome.rule.label
    if isinstance(item, Event):
        rec["outcome"] = "event"
        rec["event"] = event_json(item)
    elif isinstance(item, Ignored):
        rec["outcome"] = "ignored"
        rec["reason"] = item.reason
        rec["detail"] = "no rule matches (otherwise: ignore)"
    else:
        assert isinstance(item, DeadLetter)
        rec["outcome"] = "dead_letter"
        rec["reason"] = item.reason
        rec["detail"] = item.detail
    return rec


def line_of(rec: dict[str, Any]) -> str:
    """One sample message's outcome for humans."""
    head = f"{rec['message']}: "
    if rec["outcome"] == "event":
        return (f"{head}{rec.get('rule', 'native')} -> "
                f"{json.dumps(rec['event'], ensure_ascii=False, separators=(',', ':'))}")
    if rec["outcome"] == "ignored":
        return f"{head}ignored ({rec['reason']}): {rec['detail']}"
    rule = f" ({rec['rule']})" if "rule" in rec else ""
    return f"{head}dead letter {rec['reason']}{rule}: {rec['detail']}"


def read_jsonl(path: str) -> list[bytes]:
    """The message values of a JSONL file: one a line, blank lines skipped."""
    with open(path, "rb") as fh:
        return [line.rstrip(b"\r\n") for line in fh if line.strip()]


async def latest_messages(kafka_options: dict[str, Any], topic: str, n: int) -> (
    list[bytes | None]
):
    """The latest `n` messages of `topic` (by Kafka timestamp over all partitions), read
    without a consumer group, so no committed offset moves."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(enable_auto_commit=False, **kafka_options)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts and topic in await consumer.topics():  # metadata not fetched yet
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise LookupError(f"topic {topic!r} has no partitions (does it exist?)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        got: list[tuple[int, int, int, bytes | None]] = []
        for tp in tps:
            # Where the partition ends: the listed end offset first, then the highwater of
            # the fetch itself (a broker may list less than it holds); read again from
            # further back when the first start was too late.
            high = end[tp]
            for _ in range(3):
                start = max(first[tp], high - n)
                consumer.seek(tp, start)
                records = await _read_to_end(consumer, tp)
                fetched_high = consumer.highwater(tp)
                if fetched_high is None or fetched_high - n >= start or start == first[tp]:
                    high = fetched_high if fetched_high is not None else high
                    break
                high = fetched_high
            got += [(r.timestamp, r.partition, r.offset, r.value) for r in records
                    if high - n <= r.offset < high]
        got.sort(key=lambda r: (r[0], r[1], r[2]))
        return [r[3] for r in got[-n:]]
    finally:
        await consumer.stop()


async def _read_to_end(consumer: Any, tp: Any) -> list[Any]:
    """The records of `tp` from the consumer's position to the partition's end."""
    out: list[Any] = []
    while True:
        batch = await consumer.getmany(tp, timeout_ms=2000)
        records = batch.get(tp, [])
        out += records
        high = consumer.highwater(tp)
        if not records or (high is not None and await consumer.position(tp) >= high):
            return out


def run(fmt: str, sample: str | None, topic: str | None, latest: int, as_json: bool,
        list_presets: bool, lateness_days: int,
        kafka_options: Callable[[], dict[str, Any]], out: IO[str]) -> int:
    """The command: 0 when the format is usable (and the sample could be read), 1 when
    the mapping has problems, 2 when the sample cannot be read."""
    if list_presets:
        for name, path in presets().items():
            how = name if name in NAMED_PRESETS else str(path)
            print(f"{name}: STREAM_EVENT_FORMAT={how}", file=out)
        return 0
    problems = problems_of(fmt)
    if problems:
        for line in problems:
            print(line, file=out)
        return 1
    mapper = load(fmt)
    if not as_json:
        print(_summary(fmt, mapper), file=out)
    if sample is None and topic is None:
        return 0
    try:
        if sample is not None:
            values: list[bytes | None] = list(read_jsonl(sample))
        else:
            assert topic is not None
            values = asyncio.run(latest_messages(kafka_options(), topic, latest))
    except (OSError, LookupError, KafkaError) as exc:
        print(f"cannot read the sample: {exc}", file=out)
        return 2
    now_ms = SYSTEM_CLOCK.now_ms()
    lateness_ms = lateness_days * DAY_MS
    counts: Counter[str] = Counter()
    for n, value in enumerate(values, 1):
        outcome = (mapper.explain(value, now_ms, lateness_ms) if mapper is not None
                   else explain_native(value, now_ms, lateness_ms))
        rec = describe(n, outcome)
        if rec["outcome"] == "event":
            counts["event " + rec["event"]["type"]] += 1
        else:
            counts[f"{rec['outcome'].replace('_', ' ')} {rec['reason']}"] += 1
        print(json.dumps(rec, ensure_ascii=False) if as_json else line_of(rec), file=out)
    if not as_json:
        print(f"{len(values)} messages: " + (", ".join(
            f"{k} {v}" for k, v in sorted(counts.items())) or "none"), file=out)
    return 0


def _summary(fmt: str, mapper: Mapper | None) -> str:
    if mapper is None:
        return f"{fmt}: section-1 events, no mapping ({NATIVE})"
    spec = mapper.spec
    source = spec.source if fmt in NAMED_PRESETS else fmt
    rules = "; ".join(f"{r.label} -> {r.type}" for r in spec.rules)
    return (f"{source}: OK, {len(spec.rules)} rules ({rules}); otherwise {spec.otherwise}"
            f"{'' if fmt not in NAMED_PRESETS else f' [preset {fmt}]'}")


"""Mapped formats (contract section 5) through the real worker, broker and Redis.

One worker reads six topics at once: native section-1 events, and a generated stream
of each shipped preset (Segment, RudderStack, PostHog, Snowplow, CloudEvents), each
with anonymous-only users, empty user ids, messages no rule maps, invalid mapped values,
duplicates and every dead-letter reason. Every figure must equal the brute-force
oracle's over the section-1 events the messages must become, `ignored_total` and the
dead-letter topic must hold exactly the expected messages, and a second worker in a
fresh consumer group (a redelivery of everything) must change nothing, ignored counts
included. A bad mapping file stops the worker at start with one line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from stream.formats import preset_path
from tests.integration.test_worker_e2e import assert_figures_match
from tests.support import dataset as ds
from tests.support import formats_data as fd
from tests.support import oracle
from tests.support.kafka import Topics, consume_all, produce
from tests.support.workers import (
    PATHS,
    PURE_PATH_LINE,
    ROOT,
    WorkerProcess,
    path_env,
    report_json,
    wait_until,
    worker_env,
)


def accounted(figures: dict[str, Any]) -> int:
    return (sum(figures["events_total"].values()) + sum(figures["dead_letter_total"].values())
            + sum(figures["ignored_total"].values()))


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_every_preset_and_native_in_one_worker(broker: TansuBroker, redis_server: RedisServer,
                                               topics: Topics, path: str) -> None:
    base = ds.generate_stable(size=1500, seed=1)
    rudder_topic, snowplow_topic = f"rudder.{topics.suffix}", f"snowplow.{topics.suffix}"
    broker.create_topics([rudder_topic, snowplow_topic], 4)
    where = {"segment": topics.conversions, "posthog": topics.cancellations,
             "cloudevents": topics.surveys, "rudderstack": rudder_topic,
             "snowplow": snowplow_topic}
    streams = []
    native = fd.MappedStream("native")
    for _, key, value in base.messages:
        native.add(topics.activity, key, value, value)
    streams.append(native)
    for n, (preset, topic) in enumerate(where.items(), 2):
        data = ds.generate(base.now, size=700, seed=n)
        assert data.is_stable_at(base.now)
        streams.append(fd.mapped_stream(preset, data, topic, seed=n))
    # Event ids are one namespace across topics and formats: the same conversion as a
    # native event and as a Segment call is folded once (counted twice in events_total).
    shared = {"event_id": "shared-conversion", "type": "conversion", "user_id": "both",
              "ts": oracle.to_ms(base.now) - 60_000, "campaign": "spring"}
    native.add(topics.activity, b"both", json.dumps(shared).encode(),
               json.dumps(shared).encode())
    streams[1].add(topics.conversions, b"both", json.dumps(
        {"type": "track", "event": "Order Completed", "messageId": "shared-conversion",
         "userId": "both", "timestamp": shared["ts"],
         "context": {"campaign": {"name": "spring"}}}).encode(), json.dumps(shared).encode())

    want = fd.expected_figures(streams, base)
    expected = [e for s in streams for e in s.expected]
    assert want["ignored_total"]["unmapped"] > 10
    assert want["dead_letter_total"]["unmapped"] >= 2
    assert all(want["dead_letter_total"][r] > 0 for r in ("invalid_json", "invalid_event",
                                                          "late", "future"))
    messages = [m for s in streams for m in s.messages]
    asyncio.run(produce(broker.bootstrap, messages))

    env = worker_env(broker.bootstrap, redis_server.url, {
        **topics.env(),
        "STREAM_TOPICS": ",".join([*topics.inputs, rudder_topic, snowplow_topic]),
        # the default format is segment; the per-topic formats override it
        "STREAM_EVENT_FORMAT": "segment",
        "STREAM_TOPIC_FORMATS": ",".join([
            f"{topics.activity}=native",
            *(f"{topic}={preset_path(p)}" for p, topic in where.items() if p != "segment")]),
        **path_env(path),
    })
    with WorkerProcess(env) as worker:
        wait_until(lambda: accounted(report_json(env)) >= len(messages), 180,
                   "the worker to account for every message", interval=1.0)
        got = report_json(env)
        assert accounted(got) == len(messages), worker.log()[-3000:]
        assert_figures_match(got, want)
        assert got["ignored_total"] == {"unmapped": expected.count(fd.IGNORED)}
        metrics = worker.metrics()
        assert metrics[("engagement_ignored_total", (("reason", "unmapped"),))] == \
            expected.count(fd.IGNORED)
        assert metrics[("engagement_dead_letter_total", (("reason", "unmapped"),))] == \
            expected.count(fd.UNMAPPED)
        assert worker.stop() == 0
        assert (PURE_PATH_LINE in worker.log()) is (path == "pure")

    # The dead-letter topic: the original bytes of exactly the messages expected there.
    n_dead = sum(want["dead_letter_total"].values())
    dead = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter, n=n_dead, timeout=30))
    assert Counter(m.header("error") for m in dead) == +Counter(want["dead_letter_total"])
    values = [m[2] for m in messages]
    bad = Counter(v for v, e in zip(values, expected, strict=True) if e == fd.UNMAPPED or (
        e != fd.IGNORED and oracle.check(e, base.now).reason is not None))  # type: ignore[arg-type]
    assert Counter(m.value for m in dead) == bad
    details = [m.header("error_detail") for m in dead if m.header("error") == "invalid_event"]
    assert any("`userId`" in d for d in details), details[:5]

    # A second worker in a new consumer group re-reads everything from Kafka and resumes
    # from the offsets in Redis: no event, dead letter or ignored message counts twice.
    env2 = {**env, "STREAM_CONSUMER_GROUP": topics.group + "-second"}
    with WorkerProcess(env2) as second:
        wait_until(lambda: any(n == "engagement_consumer_lag" for (n, _) in
                               second.metrics()), 60, "the second worker's assignment")
        wait_until(lambda: all(v == 0 for (n, _), v in second.metrics().items()
                               if n == "engagement_consumer_lag"), 60, "second worker lag 0")
        assert report_json(env2) == got


def test_bad_mapping_file_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("fields: {event_id: id, user_id: uid, ts: at}\n"
                   "rules:\n  - match: {kind: visit}\n    type: visit\n")
    env = worker_env("127.0.0.1:1", "redis://127.0.0.1:1/0",
                     {"STREAM_TOPIC_FORMATS": f"web={bad}"})
    out = subprocess.run([sys.executable, "-m", "stream", "worker"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("engagement-stream: bad setting STREAM_TOPIC_FORMATS: "
                               f"mapping file {bad}: rule 1: a visit event needs `campaign`")
    assert "Traceback" not in out.stderr


def test_check_format_reads_the_latest_messages_of_a_topic(broker: TansuBroker,
                                                           topics: Topics) -> None:
    now_ms = oracle.to_ms(ds.datetime.now(ds.UTC))
    calls: list[dict[str, Any]] = [
        {"type": "track", "event": "Signed Up", "messageId": f"m{i}", "userId": f"u{i}",
         "timestamp": now_ms - 60_000} for i in range(5)]
    calls[4] = {"type": "identify", "userId": "u4"}
    asyncio.run(produce(broker.bootstrap, [(topics.activity, b"k", json.dumps(c).encode())
                                           for c in calls]))
    env = worker_env(broker.bootstrap, "redis://127.0.0.1:1/0")
    out = subprocess.run([sys.executable, "-m", "stream", "check-format", "segment",
                          "--topic", topics.activity, "--latest", "3", "--json"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["outcome"] for r in recs] == ["event", "event", "ignored"]
    assert [r["event"]["event_id"] for r in recs[:2]] == ["m2", "m3"]
    assert recs[0]["rule"] == "rule 1 (Signed Up)"
    assert recs[0]["event"] == {"event_id": "m2", "type": "signup", "user_id": "u2",
                                "ts": now_ms - 60_000}
    # the committed offsets of the worker's group did not move (no group was used)
    missing = subprocess.run([sys.executable, "-m", "stream", "check-format", "segment",
                              "--topic", "no.such.topic." + topics.suffix], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert "cannot read the sample" in missing.stdout


def test_backfill_reads_a_mapped_topic(broker: TansuBroker, redis_server: RedisServer,
                                       topics: Topics) -> None:
    """`backfill --topic T` takes T's format from the settings like the worker."""
    data = ds.generate_stable(size=400, seed=9)
    stream = fd.mapped_stream("segment", data, topics.conversions, seed=9)
    asyncio.run(produce(broker.bootstrap, stream.messages))
    env = worker_env(broker.bootstrap, redis_server.url, {
        **topics.env(), "STREAM_TOPIC_FORMATS": f"{topics.conversions}=segment"})
    out = subprocess.run([sys.executable, "-m", "stream", "backfill", "--no-progress",
                          "--topic", topics.conversions, "--from-offset", "0"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    got = report_json(env)
    want = fd.expected_figures([stream], data)
    assert got["events_total"] == want["events_total"]
    assert got["ignored_total"] == want["ignored_total"]
    assert got["dead_letter_total"] == want["dead_letter_total"]
    assert got["customers"] == want["customers"]

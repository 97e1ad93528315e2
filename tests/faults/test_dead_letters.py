"""Issue 12's hostile messages end to end, on the real broker and Redis, with both Kafka
clients: tombstones (with a key, and keyless ones), a 1.1 MB and a 3 MB invalid message
(over the dead-letter producer's 1 MB limit; the embedded broker itself takes messages
of any size, so they get in), invalid messages with headers of their own, and
snappy-compressed batches among the valid events.

The worker never exits; every figure equals the oracle's; every dead letter is on the
dead-letter topic once, with its reason, the original key and headers, and the value
(left out, with a header saying so, when it is too large; null or empty for a
tombstone, with a header saying so)."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    assert_exact,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    truth_of,
    wait_applied,
    wait_lag_zero,
)
from tests.support import oracle
from tests.support.kafka import Topics, consume_all
from tests.support.produced import Full, produce_groups, produce_raw_batch
from tests.support.workers import WorkerProcess

TRACE = [("trace-id", b"7f3a"), ("origin", b"mobile")]
#: The dead-letter producer's limit (aiokafka's default max_request_size).
LIMIT = 1024 * 1024


def hostile(topics: Topics, now_ms: int) -> dict[str, list[Full]]:
    act, conv = topics.activity, topics.conversions
    too_big_event = {"event_id": "big-3", "type": "activity", "user_id": "u-big", "ts": now_ms,
                     "props": {"blob": ["x" * 3_000_000]}}  # a prop that is not a string
    return {
        "tombstones": [(act, b"user-t1", None, TRACE), (conv, b"user-t2", None, [])],
        "keyless": [(act, None, None, []), (topics.surveys, None, None, [("trace-id", b"k")])],
        "large": [(act, b"big-1", b'{"event_id": "' + b"x" * 1_100_000, TRACE),
                  (conv, b"big-3", json.dumps(too_big_event).encode(), [("origin", b"web")])],
        "bad": [(act, b"k-bad", b"{not json", TRACE),
                (topics.cancellations, b"k-bad2", b'{"type": "signup"}', [("a", b"")])],
    }


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
def test_tombstones_huge_messages_and_snappy_batches(broker: TansuBroker,
                                                     redis_server: RedisServer,
                                                     topics: Topics, client: str) -> None:
    base = make_dataset(topics, 3_000, seed=31)
    valid: list[Full] = [(t, k, v, []) for t, k, v in base.messages]
    bad = hostile(topics, int(base.now.timestamp() * 1000))
    third = len(valid) // 3
    groups: list[tuple[str | None, list[Full]]] = [
        (None, valid[:third]),
        (None, bad["tombstones"]),
        # a tombstone inside a snappy batch too: its key is read again from the batch
        ("snappy", [*valid[third:2 * third], (topics.activity, b"user-t3", None, TRACE)]),
        (None, bad["large"] + bad["bad"]),
        ("keyless-null", bad["keyless"]),
        ("snappy", valid[2 * third:]),
    ]
    produced = [m for _, messages in groups for m in messages]
    places = produce_groups(broker.bootstrap, groups)
    truth = truth_of([(t, k, v) for t, k, v, _ in produced], base.now,  # type: ignore[misc]
                     base.timezone)
    assert truth.dead_letters["invalid_json"] >= 8 and truth.dead_letters["invalid_event"] >= 2
    env = env_for(broker.bootstrap, redis_server.url, topics, truth,
                  STREAM_KAFKA_CLIENT=client)
    worker = WorkerProcess(env).start()
    with logged_workers(worker):
        wait_applied(redis_server.url, input_highwaters(broker.bootstrap, topics), 180)
        wait_lag_zero([worker])
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)

        # Every dead letter, once, with its reason, key, headers and value.
        want = {}
        for (_topic, key, value, headers), place in zip(produced, places, strict=True):
            reason = oracle.check(value, truth.now).reason
            if reason is not None:
                want[(place[0], str(place[1]), str(place[2]))] = (reason, key, value, headers)
        got = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter, timeout=60))
        by_origin = {(m.header("source_topic"), m.header("source_partition"),
                      m.header("source_offset")): m for m in got}
        assert len(got) == len(by_origin) == len(want)
        assert by_origin.keys() == want.keys()
        omitted = 0
        for origin, (reason, key, value, headers) in want.items():
            m = by_origin[origin]
            assert m.header("error") == reason, origin
            assert m.key == key, origin
            for name, raw in headers:
                assert m.headers[name] == raw, (origin, name)
            if value is None:
                assert m.header("dead_letter_value") == "null"
                assert m.value == (None if key is not None else b"")
            elif len(value) > LIMIT:
                omitted += 1
                assert m.header("dead_letter_value") == (
                    f"omitted: {len(value)} bytes, too large for the dead-letter topic")
                assert m.value is None
            else:
                assert m.header("dead_letter_value") is None
                assert m.value == value
        assert omitted == 2

        assert worker.proc is not None and worker.proc.poll() is None  # never exited
        metrics = worker.metrics()
        assert metrics[("engagement_dead_letter_values_omitted_total", ())] == 2
        assert metrics[("engagement_dead_letter_failing", ())] == 0
        assert worker.get("/healthz")[0] == 200
        assert worker.stop() == 0
        assert "Traceback" not in worker.log()


def corrupt_batches() -> dict[str, bytes]:
    """Record batches no reader can read, of three records each: one whose CRC does not
    match (a flipped byte in a value) and one whose gzip data is not gzip."""
    def plain() -> bytes:
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
        for i in range(3):
            builder.append(i, timestamp=None, key=b"k%d" % i,
                           value=b'{"event_id": "lost-%d"}' % i, headers=[("h", b"v")])
        return bytes(builder.build())

    bad_crc = bytearray(plain())
    bad_crc[-5] ^= 0xFF
    data = plain()
    records = b"\x1f\x8b" + data[61:]  # a gzip header, then no gzip data
    bad_gzip = bytearray(data[:61]) + records
    struct.pack_into(">i", bad_gzip, 8, len(bad_gzip) - 12)
    struct.pack_into(">h", bad_gzip, 21, struct.unpack_from(">h", bad_gzip, 21)[0] | 1)
    struct.pack_into(">I", bad_gzip, 17, crc32c(bytes(bad_gzip[21:])))
    return {"CRC mismatch": bytes(bad_crc), "gzip data not readable": bytes(bad_gzip)}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
def test_unreadable_batches_are_dead_lettered_whole_and_the_partitions_move(
        broker: TansuBroker, redis_server: RedisServer, topics: Topics, client: str) -> None:
    truth = make_dataset(topics, 2_000, seed=51)
    valid: list[Full] = [(t, k, v, []) for t, k, v in truth.messages]
    half = len(valid) // 2
    produce_groups(broker.bootstrap, [(None, valid[:half])])
    bad = corrupt_batches()
    where = {}
    for (why, raw), (topic, partition) in zip(bad.items(), [(topics.activity, 0),
                                                            (topics.conversions, 1)],
                                             strict=True):
        where[why] = (topic, partition, produce_raw_batch(broker.bootstrap, topic, partition,
                                                          raw))
    produce_groups(broker.bootstrap, [("lz4", valid[half:])])
    # the oracle reads values; the batches are not among them
    truth.dead_letters["unreadable_batch"] = len(bad)
    truth.run.figures["dead_letter_total"]["unreadable_batch"] = len(bad)
    worker = WorkerProcess(env_for(broker.bootstrap, redis_server.url, topics, truth,
                                   STREAM_KAFKA_CLIENT=client)).start()
    with logged_workers(worker):
        wait_applied(redis_server.url, input_highwaters(broker.bootstrap, topics), 120)
        wait_lag_zero([worker])
        with RedisServer() as ref:
            assert_exact(redis_server.url, truth, ref)  # dead_letter_total too
        every = asyncio.run(consume_all(broker.bootstrap, topics.dead_letter, timeout=60))
        assert len(every) == sum(truth.dead_letters.values())
        got = [m for m in every if m.header("error") == "unreadable_batch"]
        assert len(got) == len(bad)
        for m in got:
            why = next(w for w in bad if w in (m.header("error_detail") or ""))
            topic, partition, offset = where[why]
            assert m.header("error") == "unreadable_batch"
            assert (m.header("source_topic"), m.header("source_partition"),
                    m.header("source_offset"), m.header("source_last_offset")) == (
                topic, str(partition), str(offset), str(offset + 2))
            # the batch's bytes (the broker sets its base offset)
            assert m.value is not None and m.value[61:] == bad[why][61:]
        metrics = worker.metrics()
        assert metrics[("engagement_unreadable_batches_total", ())] == len(bad)
        assert metrics[("engagement_dead_letter_total", (("reason", "unreadable_batch"),))] == \
            len(bad)
        assert worker.log().count("dead-lettering it whole as unreadable_batch") == len(bad)
        assert worker.proc is not None and worker.proc.poll() is None
        assert worker.stop() == 0
        assert "Traceback" not in worker.log()

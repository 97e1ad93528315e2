"""Every Kafka compression codec end to end: one dataset produced in record batches of
gzip, snappy (aiokafka's xerial framing, as the Java client writes it, and librdkafka's
plain snappy), lz4 and zstd (from both producers), read by a worker with each Kafka
client; every figure equals the oracle's and nothing is dead-lettered beyond what the
oracle says (an unreadable batch would be)."""

from __future__ import annotations

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    assert_exact,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    wait_applied,
    wait_lag_zero,
)
from tests.support.kafka import Topics
from tests.support.produced import Full, produce_groups
from tests.support.workers import PURE_PATH_LINE, WorkerProcess, path_env

CODECS = ["gzip", "snappy", "lz4", "zstd", "rdkafka:snappy", "rdkafka:lz4", "rdkafka:zstd",
          "rdkafka:gzip"]


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(("client", "path"), [("aiokafka", "compiled"),
                                              ("confluent", "compiled"),
                                              ("aiokafka", "pure")])
def test_every_codec_gives_the_oracles_figures(broker: TansuBroker, redis_server: RedisServer,
                                               topics: Topics, client: str, path: str) -> None:
    truth = make_dataset(topics, 4_000, seed=41, bulk_activity=4_000)
    messages: list[Full] = [(t, k, v, []) for t, k, v in truth.messages]
    step = len(messages) // len(CODECS) + 1
    produce_groups(broker.bootstrap, [(codec, messages[i * step:(i + 1) * step])
                                      for i, codec in enumerate(CODECS)])
    worker = WorkerProcess(env_for(broker.bootstrap, redis_server.url, topics, truth,
                                   STREAM_KAFKA_CLIENT=client, **path_env(path))).start()
    with logged_workers(worker):
        wait_applied(redis_server.url, input_highwaters(broker.bootstrap, topics), 180)
        wait_lag_zero([worker])
        with RedisServer() as ref:
            got = assert_exact(redis_server.url, truth, ref)
        assert "unreadable_batch" not in got["dead_letter_total"]
        assert "unreadable_batch" not in worker.log()
        assert worker.stop() == 0
        assert "Traceback" not in worker.log()
        assert (PURE_PATH_LINE in worker.log()) is (path == "pure")

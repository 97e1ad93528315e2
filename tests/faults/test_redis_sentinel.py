"""Redis under Sentinel: a master, a replica and three sentinels (`redis-server
--sentinel`) on free loopback ports, passwords on the data nodes and on the sentinels.
The worker finds the master through `STREAM_REDIS_SENTINELS`; the master is SIGKILLed
while the worker folds; the sentinels promote the replica, and the worker carries on
against it. Writes the replica never got are found by the offset compare-and-set and
read again, so every figure equals the oracle afterwards, and `report` (through the
sentinels too) prints them."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.faults.harness import (
    applied_offsets,
    assert_exact,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    produce_all,
    wait_applied,
)
from tests.support.kafka import Topics
from tests.support.workers import WorkerProcess, report_json, wait_until

MASTER = "engagement"
DATA_PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"


class Sentinels:
    """Three sentinels watching `master_port`; quorum 2, a node is down after 1 s."""

    def __init__(self, master_port: int) -> None:
        self.ports = [free_port() for _ in range(3)]
        self.dir = Path(tempfile.mkdtemp(prefix="sentinels-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.password_file = self.dir / "sentinel-password"
        self.password_file.write_text(SENTINEL_PASSWORD + "\n")
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"requirepass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
                f"sentinel auth-pass {MASTER} {DATA_PASSWORD}\n"
                f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n")
            log = open(self.dir / f"sentinel-{port}.log", "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                               stdout=log, stderr=subprocess.STDOUT))

    @property
    def env(self) -> dict[str, str]:
        return {"STREAM_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.ports),
                "STREAM_REDIS_SENTINEL_MASTER": MASTER,
                "STREAM_REDIS_SENTINEL_PASSWORD_FILE": str(self.password_file),
                "STREAM_REDIS_URL": f"redis://:{DATA_PASSWORD}@127.0.0.1:1/0"}

    def master(self) -> tuple[str, int] | None:
        for port in self.ports:
            try:
                client = redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1,
                                     decode_responses=True)
                addr = client.sentinel_get_master_addr_by_name(MASTER)
                client.close()
                if addr:
                    return str(addr[0]), int(addr[1])
            except redis.exceptions.RedisError:
                continue
        return None

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, Sentinels]]:
    with RedisServer(password=DATA_PASSWORD) as master, RedisServer(password=DATA_PASSWORD,
                     extra_args=["--replicaof", "127.0.0.1", str(master.port)]) as replica:
        sentinels = Sentinels(master.port)
        try:
            wait_until(lambda: sentinels.master() == ("127.0.0.1", master.port), 20,
                       "sentinels watching the master")
            yield master, replica, sentinels
        finally:
            sentinels.stop()


@pytest.mark.slow
def test_master_killed_while_folding_fails_over_exactly(
        broker: TansuBroker, topics: Topics,
        sentinel_setup: tuple[RedisServer, RedisServer, Sentinels]) -> None:
    master, replica, sentinels = sentinel_setup
    truth = make_dataset(topics, 3000, bulk_activity=60_000, seed=11)
    n = truth.total
    produce_all(broker.bootstrap, truth.messages[: n // 4])
    env = env_for(broker.bootstrap, master.url, topics, truth, **sentinels.env)
    worker = WorkerProcess(env)
    with logged_workers(worker):
        worker.start()
        wait_until(lambda: sum(applied_offsets(master.url).values()) > 0, 60, "folding")
        before = sum(applied_offsets(master.url).values())
        # 1. The second quarter arrives while the worker folds; the master is killed
        #    once some of it is applied (usually mid-batch, the input still arriving).
        # 2. The second half is produced only after the kill: on a fast run the worker
        #    could otherwise have folded everything before the kill and never met the
        #    dead master, and the failover would go untested.
        middle = threading.Thread(target=produce_all,
                                  args=(broker.bootstrap, truth.messages[n // 4: n // 2]))
        middle.start()
        try:
            wait_until(lambda: sum(applied_offsets(master.url).values()) > before + 2000, 60,
                       "folding the rest", interval=0.1)
            master.kill()  # SIGKILL, mid-stream
            killed_at = time.monotonic()
        finally:
            middle.join(120)
        produce_all(broker.bootstrap, truth.messages[n // 2:])
        wait_until(lambda: sentinels.master() == ("127.0.0.1", replica.port), 60,
                   "the replica promoted")
        failover = time.monotonic() - killed_at
        highs = input_highwaters(broker.bootstrap, topics)
        new_url = replica.url
        wait_applied(new_url, highs, 180)
        with RedisServer() as ref:
            figures = assert_exact(new_url, truth, ref)
        assert "Redis unavailable" in worker.log()
        assert report_json(env)["events_total"] == figures["events_total"]
        print(f"failover took {failover:.1f}s")

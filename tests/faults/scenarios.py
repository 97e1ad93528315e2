"""Fault scenarios written once, run by the native worker and by the faust engine.

A scenario is the same whatever the engine: what differs is the size of its input, how
many workers share it and how long they may take (the faust engine is slower), and for
Redis losing writes how soon Kafka's commits are ahead and which log line says the loss
was caught. Those are the parameters; the steps and the checks are here only.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.harness import (
    Truth,
    aof_redis,
    applied_offsets,
    assert_dead_letter_topic,
    assert_exact,
    crash_and_restore,
    env_for,
    input_highwaters,
    logged_workers,
    make_dataset,
    parts,
    produce_all,
    snapshot,
    wait_applied,
    wait_kafka_ahead,
    wait_lag_zero,
)
from tests.support.kafka import Topics, produce
from tests.support.workers import WorkerProcess, wait_until

#: The worker's log line when SIGTERM arrives (it finishes the batch in flight).
STOPPING = "stopping: finishing the batch in flight"
#: The worker's log line when a batch's compare-and-set finds Redis's offsets behind.
RELOADING = "reloading offsets from Redis and re-reading"
#: The worker's log line when its idle check finds Redis's offsets behind.
RESUMING = "resuming from Redis's"


def stop_all_at_once(workers: list[WorkerProcess], timeout: float = 15.0) -> None:
    """SIGTERM to every worker at once, as an orchestrator stopping the deployment does
    (stopped one by one, each would leave during the rebalance the previous one started,
    and the embedded broker's joins, half the session timeout, can then outlast
    STREAM_SHUTDOWN_SECONDS on a loaded machine); each exits 0."""
    for w in workers:
        w.signal(signal.SIGTERM)
    codes = [w.wait(timeout) for w in workers]
    assert codes == [0] * len(workers), codes


def sigterm_cleanly(worker: WorkerProcess) -> None:
    """SIGTERM: the worker finishes the batch in flight and exits 0 within 10 s, with no
    traceback."""
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(15)
    took = time.monotonic() - started
    assert code == 0
    assert took < 10, took
    log = worker.log()
    assert STOPPING in log
    assert "Traceback" not in log


def complete_exactly(bootstrap: str, redis_url: str, topics: Topics, truth: Truth,
                     workers: list[WorkerProcess], *, applied_within: float,
                     lag_within: float = 120.0, ref: RedisServer | None = None,
                     dead_letters: bool = True) -> None:
    """Once the whole input is on the broker: every message applied in Redis, lag 0 on
    the live workers, every figure exact against `ref` (a reference Redis for the
    HyperLogLogs; a fresh one when None) and, with `dead_letters`, every bad message on
    the dead-letter topic."""
    highs = input_highwaters(bootstrap, topics)
    assert sum(highs.values()) == truth.total
    wait_applied(redis_url, highs, timeout=applied_within)
    wait_lag_zero(workers, timeout=lag_within)
    if ref is None:
        with RedisServer() as fresh:
            assert_exact(redis_url, truth, fresh)
    else:
        assert_exact(redis_url, truth, ref)
    if dead_letters:
        assert_dead_letter_topic(bootstrap, topics, truth)


# -- workers SIGKILLed while the input streams in -------------------------------------------


@dataclass(frozen=True)
class KillRun:
    """The parameters of one run of :func:`sigkill_while_streaming`."""

    size: int  #: messages of the seeded dataset
    bulk_activity: int  #: plain activity events spread through it
    seed: int
    workers: int
    kills: int  #: at least this many SIGKILLs, and until all is produced
    chunk: int  #: messages produced at once, a second apart
    pause: tuple[float, float]  #: seconds between kills, drawn uniformly
    rng_seed: int
    applied_within: float  #: seconds for everything to be applied after the last kill
    lag_within: float = 120.0
    #: messages applied before the first kill (0: kill from the start)
    fold_before_kills: int = 0
    #: messages the input must hold at least (the dataset's size is approximate)
    min_total: int = 0
    env: dict[str, str] = field(default_factory=dict)


def sigkill_while_streaming(broker: TansuBroker, redis_url: str, topics: Topics,
                            run: KillRun) -> None:
    """Workers share the partitions while the input is produced in chunks; a random one
    is SIGKILLed (no shutdown code runs, the batch in flight is cut wherever it is) again
    and again and restarted at once. Afterwards every figure is exact, every HyperLogLog
    equal to the reference, lag 0, the dead letters exactly the bad input, and every
    worker stops cleanly."""
    truth = make_dataset(topics, run.size, bulk_activity=run.bulk_activity, seed=run.seed)
    assert truth.total >= run.min_total
    env = env_for(broker.bootstrap, redis_url, topics, truth, **run.env)
    rng = random.Random(run.rng_seed)
    chunks = [truth.messages[i:i + run.chunk] for i in range(0, truth.total, run.chunk)]
    produced = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for chunk in chunks:
                asyncio.run(produce(broker.bootstrap, chunk))
                time.sleep(1.0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            produced.set()

    workers = [WorkerProcess(env).start() for _ in range(run.workers)]
    retired: list[WorkerProcess] = []
    feeder = threading.Thread(target=producer, daemon=True)
    with logged_workers(workers, retired):
        feeder.start()
        if run.fold_before_kills:
            # The first kill once some batches are in Redis: the workers are folding.
            wait_until(lambda: sum(applied_offsets(redis_url).values())
                       > run.fold_before_kills, 90, "the workers to fold")
        kills = 0
        while kills < run.kills or not produced.is_set():
            time.sleep(rng.uniform(*run.pause))
            i = rng.randrange(len(workers))
            victim = workers[i]
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            retired.append(victim)
            workers[i] = WorkerProcess(env).start()
            kills += 1
        feeder.join(60)
        assert not errors, errors
        assert kills >= run.kills

        complete_exactly(broker.bootstrap, redis_url, topics, truth, workers,
                         applied_within=run.applied_within, lag_within=run.lag_within)
        stop_all_at_once(workers)


# -- Redis restarted from an older AOF under a running worker -------------------------------


def redis_lost_under_running_worker(broker: TansuBroker, topics: Topics, tmp_path: Path, *,
                                    seed: int, commits_within: float,
                                    caught_by: tuple[str, ...], **env: str) -> None:
    """Redis SIGKILLed while more input arrives (the worker holds it in a batch it
    retries) and restarted from a copy of its AOF taken earlier, while Kafka's committed
    offsets are ahead of that copy's: Redis has lost its latest writes. The worker
    stays up, notices (a line of `caught_by` in its log), re-reads from Redis's offsets
    and every figure is exact.

    `commits_within`: seconds after the last write within which the worker's Kafka
    commits must be past the copy's offsets."""
    truth = make_dataset(topics, 10_000, bulk_activity=40_000, seed=seed, users=3000)
    a, b, c = parts(truth)
    with aof_redis() as redis, RedisServer() as ref:
        worker_env = env_for(broker.bootstrap, redis.url, topics, truth, **env)
        worker = WorkerProcess(worker_env).start()
        with logged_workers(worker):
            produce_all(broker.bootstrap, a)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            snapshot(redis, tmp_path / "aof")
            before = applied_offsets(redis.url)
            produce_all(broker.bootstrap, b)
            wait_applied(redis.url, input_highwaters(broker.bootstrap, topics), 120)
            wait_kafka_ahead(broker.bootstrap, topics, before, commits_within)
            redis.kill()
            # The rest arrives while Redis is down: the worker holds it in a batch it
            # retries, and Redis comes back with older offsets than the batch expects.
            produce_all(broker.bootstrap, c)
            time.sleep(2)
            crash_and_restore(redis, tmp_path / "aof")
            assert applied_offsets(redis.url) == before
            complete_exactly(broker.bootstrap, redis.url, topics, truth, [worker],
                             applied_within=120, ref=ref)
            log = worker.log()
            assert any(line in log for line in caught_by), caught_by
            assert worker.proc is not None and worker.proc.poll() is None  # never crashed
            assert worker.stop() == 0

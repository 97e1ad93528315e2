"""Fault 1: workers SIGKILLed at random moments while 200k+ events stream in.

Three workers share the partitions; a random one is killed (SIGKILL: no shutdown code
runs, the batch in flight is cut wherever it is) at least ten times while the input is
being produced, and restarted at once. Afterwards every figure must be exact, every
HyperLogLog equal to the reference, lag 0, and the dead letters exactly the bad input.
"""

from __future__ import annotations

import pytest

from stream.demo.localservers import RedisServer, TansuBroker
from tests.faults.scenarios import KillRun, sigkill_while_streaming
from tests.support.kafka import Topics

#: 220k events produced 10k a second to 3 workers, one SIGKILLed every 0.5-3 s.
NATIVE = KillRun(size=20_000, bulk_activity=200_000, seed=11, workers=3, kills=12,
                 chunk=10_000, pause=(0.5, 3.0), rng_seed=1234, applied_within=240,
                 min_total=200_000, env={"STREAM_BATCH_MAX": "2000"})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_workers_at_random_moments(broker: TansuBroker, redis_server: RedisServer,
                                           topics: Topics) -> None:
    sigkill_while_streaming(broker, redis_server.url, topics, NATIVE)

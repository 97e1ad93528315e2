"""Shared fixtures: private servers on free loopback ports, per-test Kafka topics.

- ``redis_server``: a fresh ``redis-server`` per test (function scope).
- ``redis_cluster``: a fresh three-master Redis Cluster per test.
- ``broker``: one Tansu broker for the whole session; tests stay isolated through
  ``topics`` (fresh uuid-suffixed names created with 4 partitions, and a consumer group
  of their own).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make ``tests.support`` importable however pytest was started (``pytest``,
# ``python -m pytest``, from the repository root or elsewhere).
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from stream.demo.localservers import RedisCluster, RedisServer, TansuBroker  # noqa: E402
from tests.support.kafka import PARTITIONS, Topics, unique_topics  # noqa: E402


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private, empty redis-server for this test; stopped and deleted afterwards."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A private three-master Redis Cluster for this test."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def broker() -> Iterator[TansuBroker]:
    """One Tansu broker (in-memory) shared by the session. A test that kills, pauses or
    restarts a broker should start its own ``TansuBroker`` instead."""
    with TansuBroker() as server:
        yield server


@pytest.fixture
def topics(broker: TansuBroker, request: pytest.FixtureRequest) -> Topics:
    """Fresh input and dead-letter topics for this test, created with 4 partitions."""
    prefix = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name.split("[")[0])[-24:]
    names = unique_topics(prefix)
    broker.create_topics(names.all, PARTITIONS)
    return names

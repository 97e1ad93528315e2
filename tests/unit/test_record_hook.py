"""The record-set hook (`stream.kafka.fetched.install`) goes into aiokafka when a source
that needs it starts, not when the worker's modules are imported; installing it again
changes nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_importing_the_worker_leaves_aiokafka_alone() -> None:
    assert run("""
        from aiokafka.consumer import fetcher
        from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
        before = (FetchResult.getall, PartitionRecords._consumer_record,
                  fetcher.MemoryRecords)
        import stream.app, stream.backfill, stream.worker
        import stream.kafka.aiokafka_source, stream.kafka.bounded, stream.kafka.deadletters
        after = (FetchResult.getall, PartitionRecords._consumer_record,
                 fetcher.MemoryRecords)
        print(before == after)
    """) == "True"


def test_install_is_idempotent() -> None:
    assert run("""
        from aiokafka.consumer import fetcher
        from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
        library = FetchResult.getall
        from stream.kafka import fetched
        assert fetched.install() and fetched.install()
        print(FetchResult.getall is fetched._getall_chunk,
              PartitionRecords._consumer_record is fetched._light_record,
              fetcher.MemoryRecords is fetched.FetchedRecords,
              fetched._getall is library)
    """) == "True True True True"

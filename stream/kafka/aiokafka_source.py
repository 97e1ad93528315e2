"""The worker's `Source` over aiokafka's AIOKafkaConsumer (the default client)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from ..settings import Settings
from . import fetched, offsetrange
from .config import KafkaConfig
from .fetched import Origin
from .source import OriginReader, RecentOrigins, Run, chunk_origins, records_origins


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: Any, on_revoked: Any) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._on_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._on_assigned({(tp.topic, tp.partition) for tp in assigned})


class AiokafkaSource:
    """`Source` over aiokafka's AIOKafkaConsumer (manual commits, earliest reset)."""

    def __init__(self, settings: Settings, group: str | None = None,
                 topics: Iterable[str] | None = None) -> None:
        self._settings = settings
        self._topics = tuple(topics or settings.topic_list)
        self._consumer = AIOKafkaConsumer(
            group_id=group or settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_max,
            value_deserializer=fetched.raw_value,
            **KafkaConfig.from_settings(settings).aiokafka(fetch=True, group=True),
        )
        self._recent = RecentOrigins()

    async def start(self, on_assigned: Any, on_revoked: Any) -> None:
        # 1. The record-set hook goes in before the first fetch: it reads this consumer's
        #    record sets (marked by `raw_value`) with the worker's reader. Idempotent, and
        #    consumers without `raw_value` in the process are left to aiokafka.
        fetched.install()
        # 2. Then the subscription and the group join.
        self._consumer.subscribe(self._topics, listener=_Listener(on_assigned, on_revoked))
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Run]:
        data = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        runs: list[Run] = []
        readers: list[OriginReader] = []
        for tp, got in data.items():
            if isinstance(got, fetched.Chunk):
                runs.append((tp.topic, tp.partition, got.values, got.offsets))
                readers.append(chunk_origins(tp.topic, tp.partition, got))
            elif got:  # read_committed: aiokafka's records
                runs.append((tp.topic, tp.partition, [r.value for r in got],
                             [r.offset for r in got]))
                readers.append(records_origins(tp.topic, tp.partition, got))
        self._recent.add(readers)
        return runs

    def origins(self, topic: str, partition: int, offsets: list[int]) -> dict[int, Origin]:
        return self._recent.lookup(topic, partition, offsets)

    def highwater(self, topic: str, partition: int) -> int | None:
        # The fetch highwater, not ListOffsets: some brokers answer "latest" wrongly.
        return self._consumer.highwater(TopicPartition(topic, partition))  # type: ignore[no-any-return]

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._consumer.seek(TopicPartition(topic, partition), offset)

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        await self._consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
        )

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def log_ranges(self, targets: dict[tuple[str, int], int], fetch_end: bool) -> dict[
        tuple[str, int], tuple[int, int | None, bool]
    ]:
        """Optional part of `Source`: see `offsetrange.probe`. The log starts alone are
        asked through this consumer (one ListOffsets request, no other client)."""
        if fetch_end:
            return await offsetrange.probe(self._settings, targets, fetch_end)
        starts = await self._consumer.beginning_offsets(
            [TopicPartition(t, p) for t, p in targets])
        return {(tp.topic, tp.partition): (int(o), None, False) for tp, o in starts.items()}

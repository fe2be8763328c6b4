"""backupplus_ledger_repairs_total: entries the ledger's audit found wrong and repaired, all brokers
together (kept in Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from quotas import keys

_HELP = "Ledger entries the audit repaired (lost counters, leases, lease owners, records)"


class LedgerRepairsCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._total = 0

    async def refresh(self) -> None:
        self._total = int(await self.redis.hget(keys.LEDGER_REPAIRS, "total") or 0)  # type: ignore[misc]

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("backupplus_ledger_repairs", _HELP)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("backupplus_ledger_repairs", _HELP, value=self._total)

"""backupplus_store_up (this process reaches Redis, checked at each scrape) and
backupplus_store_errors_total (requests this process answered 503 ``store_unavailable``).

The gauge lets an alert tell "Redis unreachable" from "broker down" (a down broker is not scraped at
all); the counter catches an outage shorter than a scrape interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PING_TIMEOUT_S = 2.0


class StoreMetrics(Collector):
    def __init__(self, redis: aioredis.Redis, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.up = False
        self.errors = Counter(
            "backupplus_store_errors",
            "Requests this process answered 503 store_unavailable (Redis unreachable)",
            registry=registry,
        )
        registry.register(self)

    async def refresh(self) -> bool:
        """PING with a bounded wait; the result is what the next scrape reports."""
        try:
            self.up = bool(await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - any failure to reach Redis is "down"
            self.up = False
        return self.up

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        family.add_metric([], 1 if self.up else 0)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("backupplus_store_up", "1 when this process reached Redis at this scrape, else 0")

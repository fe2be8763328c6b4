"""Prometheus telemetry: one module per metric family.

Gauges of shared state (ports, outages, media nodes) are read from Redis at scrape time, so whichever
broker process answers reports the same truth; counters and the admission histogram are per process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from .admissions import AdmissionMetrics
from .ledger_repairs import LedgerRepairsCollector
from .media_nodes import MediaNodesCollector
from .outages import OutagesCollector
from .ports import PortsCollector
from .preemptions import PreemptionMetrics
from .restore_overdue import RestoreOverdueCollector
from .sla_deadlines import SlaDeadlinesCollector


class ScrapedCollector(Collector, Protocol):
    async def refresh(self) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Telemetry:
    def __init__(self, redis: aioredis.Redis, clock: Callable[[], datetime] = _utc_now) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admissions = AdmissionMetrics(self.registry)
        self.preemptions = PreemptionMetrics(self.registry)
        self._scraped: list[ScrapedCollector] = [
            PortsCollector(redis),
            OutagesCollector(redis),
            MediaNodesCollector(redis),
            SlaDeadlinesCollector(redis),
            RestoreOverdueCollector(redis, clock),
            LedgerRepairsCollector(redis),
        ]
        for collector in self._scraped:
            self.registry.register(collector)

    async def render(self) -> bytes:
        for collector in self._scraped:
            await collector.refresh()
        return generate_latest(self.registry)

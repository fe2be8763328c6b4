"""Prometheus telemetry: one module per metric family.

Gauges of shared state (ports, outages, media nodes) are read from Redis at scrape time, so whichever
broker process answers reports the same truth; counters and the admission histogram are per process.
When Redis cannot be read, /metrics still answers: ``backupplus_store_up`` says 0 and the gauges read
from Redis are left out (stale or default figures, such as zero media nodes, would raise false alerts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Protocol

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from .admissions import AdmissionMetrics
from .ledger_repairs import LedgerRepairsCollector
from .media_nodes import MediaNodesCollector
from .media_sessions import MediaSessionsCollector
from .outages import OutagesCollector
from .ports import PortsCollector
from .preemptions import PreemptionMetrics
from .restore_overdue import RestoreOverdueCollector
from .sla_deadlines import SlaDeadlinesCollector
from .store import StoreMetrics

log = logging.getLogger("backupplus.telemetry")
REFRESH_TIMEOUT_S = 5.0


class _ScrapedCollector(Protocol):
    async def refresh(self) -> None: ...
    def describe(self) -> Iterator[Metric]: ...
    def collect(self) -> Iterator[Metric]: ...


class _WhileFresh(Collector):
    """A collector read from Redis, reported only when its last read worked."""

    def __init__(self, inner: _ScrapedCollector) -> None:
        self.inner = inner
        self.fresh = False

    def describe(self) -> Iterator[Metric]:
        return self.inner.describe()

    def collect(self) -> Iterator[Metric]:
        return self.inner.collect() if self.fresh else iter(())


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Telemetry:
    def __init__(self, redis: aioredis.Redis, clock: Callable[[], datetime] = _utc_now) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admissions = AdmissionMetrics(self.registry)
        self.preemptions = PreemptionMetrics(self.registry)
        self.store = StoreMetrics(redis, self.registry)
        self._scraped = [
            _WhileFresh(PortsCollector(redis)),
            _WhileFresh(OutagesCollector(redis)),
            _WhileFresh(MediaNodesCollector(redis)),
            _WhileFresh(MediaSessionsCollector(redis)),
            _WhileFresh(SlaDeadlinesCollector(redis)),
            _WhileFresh(RestoreOverdueCollector(redis, clock)),
            _WhileFresh(LedgerRepairsCollector(redis)),
        ]
        for collector in self._scraped:
            self.registry.register(collector)

    async def render(self) -> bytes:
        for collector in self._scraped:
            collector.fresh = False
        if await self.store.refresh():
            try:
                await asyncio.wait_for(self._refresh_scraped(), REFRESH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - Redis failed mid-scrape: report what is known
                log.warning("metrics: reading Redis failed: %s: %s", type(exc).__name__, exc)
                self.store.up = False
        return generate_latest(self.registry)

    async def _refresh_scraped(self) -> None:
        for collector in self._scraped:
            await collector.inner.refresh()
            collector.fresh = True

"""Prometheus telemetry: one module per metric family.

Gauges of shared state (ports, outages, media nodes) are read from Redis at scrape time, so whichever
broker process answers reports the same truth; counters and the admission histogram are per process.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest

from .admissions import AdmissionMetrics
from .media_nodes import MediaNodesCollector
from .outages import OutagesCollector
from .ports import PortsCollector


class Telemetry:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admissions = AdmissionMetrics(self.registry)
        self._scraped: list[PortsCollector | OutagesCollector | MediaNodesCollector] = [
            PortsCollector(redis),
            OutagesCollector(redis),
            MediaNodesCollector(redis),
        ]
        for collector in self._scraped:
            self.registry.register(collector)

    async def render(self) -> bytes:
        for collector in self._scraped:
            await collector.refresh()
        return generate_latest(self.registry)

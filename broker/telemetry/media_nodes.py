"""backupplus_media_nodes{state}: media nodes ready, draining, or dead, as the registry counts them."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quotas.nodes import node_states

STATES = ("ready", "draining", "dead")


class MediaNodesCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._counts: dict[str, int] = {s: 0 for s in STATES}

    async def refresh(self) -> None:
        self._counts = await node_states(self.redis)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_media_nodes", "Media nodes by state", labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("backupplus_media_nodes", "Media nodes by state", labels=["state"])
        for state in STATES:
            family.add_metric([state], self._counts[state])
        yield family

"""backupplus_outages{state}: outages active now, and ended ones by how they ended."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quotas import keys

STATES = ("active", "restored")


class OutagesCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._counts: dict[str, int] = {s: 0 for s in STATES}

    async def refresh(self) -> None:
        active = await self.redis.scard(keys.ACTIVE_OUTAGES)
        ended = await self.redis.hgetall(keys.OUTAGE_END_COUNTS)
        # the earlier version's "expired" outages ended too: they count as restored
        self._counts = {"active": int(active), "restored": int(ended.get("restored", 0)) + int(ended.get("expired", 0))}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_outages", "Outages by state", labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("backupplus_outages", "Outages by state", labels=["state"])
        for state in STATES:
            family.add_metric([state], self._counts.get(state, 0))
        yield family

"""backupplus_ports_capacity{outage,kind} and backupplus_ports_in_use{outage,kind}, read from the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quotas import keys

KINDS = ("audio", "video")


class PortsCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._rows: list[tuple[str, dict[str, int], dict[str, int]]] = []

    async def refresh(self) -> None:
        outage_ids = sorted(str(o) for o in await self.redis.smembers(keys.ACTIVE_OUTAGES))
        async with self.redis.pipeline(transaction=False) as pipe:
            for outage_id in outage_ids:
                pipe.hgetall(keys.capacity(outage_id))
                pipe.hgetall(keys.in_use(outage_id))
            replies = await pipe.execute()
        rows = []
        for i, outage_id in enumerate(outage_ids):
            cap, use = replies[2 * i], replies[2 * i + 1]
            if not cap:  # ended between the two reads
                continue
            rows.append(
                (
                    outage_id,
                    {k: int(cap.get(k, 0)) for k in KINDS},
                    {k: int(use.get(k, 0)) for k in KINDS},
                )
            )
        self._rows = rows

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_ports_capacity", "Ports of each kind an active outage may use", labels=["outage", "kind"])
        yield GaugeMetricFamily("backupplus_ports_in_use", "Ports of each kind held by live leases", labels=["outage", "kind"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        capacity = GaugeMetricFamily(
            "backupplus_ports_capacity", "Ports of each kind an active outage may use", labels=["outage", "kind"]
        )
        in_use = GaugeMetricFamily(
            "backupplus_ports_in_use", "Ports of each kind held by live leases", labels=["outage", "kind"]
        )
        for outage_id, cap, use in self._rows:
            for kind in KINDS:
                capacity.add_metric([outage_id, kind], cap[kind])
                in_use.add_metric([outage_id, kind], use[kind])
        yield capacity
        yield in_use

"""backupplus_outages_restore_overdue: active outages past their restore deadline (clause 4-1)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.text import as_str
from quotas import keys

_HELP = "Active outages whose restore deadline has passed (nothing is cut: the hotline is late)"


class RestoreOverdueCollector(Collector):
    def __init__(self, redis: aioredis.Redis, clock: Callable[[], datetime]) -> None:
        self.redis = redis
        self.clock = clock
        self._overdue = 0

    async def refresh(self) -> None:
        outage_ids = sorted(as_str(o) for o in await self.redis.smembers(keys.ACTIVE_OUTAGES))  # type: ignore[misc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for outage_id in outage_ids:
                pipe.hmget(keys.outage_doc(outage_id), ["doc", "state"])
            replies = await pipe.execute()
        now = self.clock()
        overdue = 0
        for doc, state in replies:
            deadline = json.loads(as_str(doc))["restore_deadline"] if doc is not None else None
            if deadline is not None and as_str(state) == "active" and datetime.fromisoformat(deadline) < now:
                overdue += 1
        self._overdue = overdue

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_outages_restore_overdue", _HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_outages_restore_overdue", _HELP, value=self._overdue)

"""backupplus_sla_deadlines_total{deadline,result}: acknowledgement and restore deadlines met or missed,
each outage counted once (the count is kept in Redis, so every broker reports the same)."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from infra.text import as_str
from quotas import keys

DEADLINES = ("ack", "restore")
RESULTS = ("met", "missed")
_HELP = "SLA deadlines of outages, met or missed (clauses 3-3 and 4-1)"


class SlaDeadlinesCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._counts: dict[str, int] = {}

    async def refresh(self) -> None:
        raw = await self.redis.hgetall(keys.SLA_DEADLINES)  # type: ignore[misc]
        self._counts = {as_str(k): int(v) for k, v in raw.items()}

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("backupplus_sla_deadlines", _HELP, labels=["deadline", "result"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("backupplus_sla_deadlines", _HELP, labels=["deadline", "result"])
        for deadline in DEADLINES:
            for result in RESULTS:
                family.add_metric([deadline, result], self._counts.get(f"{deadline}:{result}", 0))
        yield family

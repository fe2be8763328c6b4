"""backupplus_media_nodes{state}: media nodes ready, draining, or dead (silent for 5 s), from the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quotas import keys

STATES = ("ready", "draining", "dead")
DEAD_AFTER_MS = 5000


async def count_media_nodes(redis: aioredis.Redis) -> dict[str, int]:
    counts = {s: 0 for s in STATES}
    now_ms = time.time() * 1000
    nodes = cast(list[tuple[str, float]], await redis.zrange(keys.MEDIA_NODES, 0, -1, withscores=True))
    for node_id, beat in nodes:
        if now_ms - float(beat) > DEAD_AFTER_MS:
            counts["dead"] += 1
            continue
        state = await redis.hget(keys.media_node(str(node_id)), "state")
        counts["draining" if state == "draining" else "ready"] += 1
    return counts


class MediaNodesCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._counts: dict[str, int] = {s: 0 for s in STATES}

    async def refresh(self) -> None:
        self._counts = await count_media_nodes(self.redis)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_media_nodes", "Media nodes by state", labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("backupplus_media_nodes", "Media nodes by state", labels=["state"])
        for state in STATES:
            family.add_metric([state], self._counts[state])
        yield family

"""backupplus_media_sessions{path}: connected sessions on the live media nodes by media path, ``direct``
or ``relay`` (through TURN), as each node reads it from its sessions' nominated ICE candidate pairs
and publishes it with its heartbeat."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quotas.nodes import media_paths

PATHS = ("direct", "relay")
_HELP = "Connected media sessions by path: direct, or relayed through TURN"


class MediaSessionsCollector(Collector):
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._counts: dict[str, int] = {p: 0 for p in PATHS}

    async def refresh(self) -> None:
        self._counts = await media_paths(self.redis)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("backupplus_media_sessions", _HELP, labels=["path"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("backupplus_media_sessions", _HELP, labels=["path"])
        for path in PATHS:
            family.add_metric([path], self._counts[path])
        yield family

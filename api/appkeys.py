"""Typed application state (aiohttp ``web.AppKey``): no globals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import web

from broker.settings import Settings
from broker.telemetry import Telemetry

if TYPE_CHECKING:
    from broker.service import Broker

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
BROKER: web.AppKey[Broker] = web.AppKey("broker")
# The media router (media.routing.MediaRouter): hands a participant's offer to its media node.
MEDIA_ROUTER: web.AppKey[Any] = web.AppKey("media_router")
# HMAC secret shared by every broker process (kept in Redis, created once).
SECRET = web.AppKey("secret", bytes)
TELEMETRY = web.AppKey("telemetry", Telemetry)

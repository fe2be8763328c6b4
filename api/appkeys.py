"""Typed application state (aiohttp ``web.AppKey``): no globals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import web

from broker.telemetry import Telemetry
from infra.settings import Settings

if TYPE_CHECKING:
    from broker.media import MediaGateway
    from broker.service import Broker

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
BROKER: web.AppKey[Broker] = web.AppKey("broker")
# Hands a participant's offer to its media node; injected by the composition root (absent: 503).
MEDIA_GATEWAY: web.AppKey[MediaGateway] = web.AppKey("media_gateway")
# HMAC secret shared by every broker process (kept in Redis, created once).
SECRET = web.AppKey("secret", bytes)
TELEMETRY = web.AppKey("telemetry", Telemetry)
# The OpenAPI document, built from the router when the app starts.
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")

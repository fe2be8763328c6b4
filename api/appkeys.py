"""Typed application state (aiohttp ``web.AppKey``): no globals."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import web

from broker.telemetry import Telemetry
from infra.settings import Settings
from quotas.secret import KeyStore

if TYPE_CHECKING:
    from broker.auditfeed import AuditHub
    from broker.media import MediaGateway
    from broker.service import Broker
    from broker.turn import TurnService

    from .streams import StreamRegistry

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
BROKER: web.AppKey[Broker] = web.AppKey("broker")
# Hands a participant's offer to its media node; injected by the composition root (absent: 503).
MEDIA_GATEWAY: web.AppKey[MediaGateway] = web.AppKey("media_gateway")
# The key ring shared by every broker process and media node (quotas.secret: one key per purpose,
# rotated with `backupplus secrets rotate`); reloaded from Redis every 2 s by the app's refresher.
KEYS = web.AppKey("keys", KeyStore)
TELEMETRY = web.AppKey("telemetry", Telemetry)
# The process's reader of the audit streams, feeding the live console (server-sent events).
AUDIT_HUB: web.AppKey[AuditHub] = web.AppKey("audit_hub")
# The open event streams of this process: their cap, and the signal that closes them at shutdown.
STREAMS: web.AppKey[StreamRegistry] = web.AppKey("streams")
# The OpenAPI document, built from the router when the app starts.
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
# Liveness beyond the process itself (e.g. serve's own redis-server): None when fine, else why not.
# Set by the composition root; /healthz fails while it answers a reason.
HEALTH_CHECK: web.AppKey[Callable[[], str | None]] = web.AppKey("health_check")
# On the ops listener's app (ops_port set): the broker app whose health and metrics it serves.
OPS_OF: web.AppKey[web.Application] = web.AppKey("ops_of")
# The TURN servers participants get credentials for (none, external, or serve's private turnserver).
TURN: web.AppKey[TurnService] = web.AppKey("turn")

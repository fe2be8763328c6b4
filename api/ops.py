"""Operations: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from quotas.nodes import node_states

from . import problems
from .appkeys import REDIS, SETTINGS, TELEMETRY
from .openapi import openapi_document
from .problems import Problem

log = logging.getLogger("backupplus.api")
routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
        nodes = await node_states(request.app[REDIS])
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means not ready
        log.warning("readyz: Redis is unreachable: %s: %s", type(exc).__name__, exc)
        raise Problem(problems.STORE_UNAVAILABLE, "Redis is unreachable") from None
    if nodes["ready"] == 0:
        raise Problem(problems.NO_MEDIA_NODE, "Redis is reachable but no media node is ready", media_nodes=nodes)
    return web.json_response({"status": "ready", "redis": "ok", "media_nodes": nodes})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = await request.app[TELEMETRY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS].base_url))

"""Operations: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from quotas.nodes import node_states

from . import models, problems
from .appkeys import HEALTH_CHECK, OPENAPI, REDIS, TELEMETRY, TURN
from .openapi import Content, doc
from .problems import Problem

log = logging.getLogger("backupplus.api")
routes = web.RouteTableDef()


@routes.get("/healthz")
@doc("Liveness: the process answers (503 while a Redis it owns is down)", auth="none",
     responses={200: models.Health}, errors=[problems.STORE_UNAVAILABLE])
async def healthz(request: web.Request) -> web.Response:
    check = request.app.get(HEALTH_CHECK)
    reason = check() if check is not None else None
    if reason is not None:
        raise Problem(problems.STORE_UNAVAILABLE, reason, headers={"Retry-After": "2"})
    return web.json_response({"status": "alive"})


@routes.get("/readyz")
@doc(
    "Readiness: Redis answers and a media node is ready",
    auth="none",
    responses={200: models.Readiness},
    errors=[problems.STORE_UNAVAILABLE, problems.NO_MEDIA_NODE],
)
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
        nodes = await node_states(request.app[REDIS])
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means not ready
        log.warning("readyz: Redis is unreachable: %s: %s", type(exc).__name__, exc)
        raise Problem(problems.STORE_UNAVAILABLE, "Redis is unreachable") from None
    if nodes["ready"] == 0:
        raise Problem(problems.NO_MEDIA_NODE, "Redis is reachable but no media node is ready", media_nodes=nodes)
    turn = request.app.get(TURN)
    return web.json_response(
        {"status": "ready", "redis": "ok", "media_nodes": nodes, "turn": turn.public() if turn else None}
    )


@routes.get("/metrics")
@doc(
    "Prometheus metrics: the ledger's usage and this process's counters",
    auth="none",
    responses={200: Content(CONTENT_TYPE_LATEST.split(";")[0], {"type": "string"})},
    errors=[problems.STORE_UNAVAILABLE],
)
async def metrics(request: web.Request) -> web.Response:
    body = await request.app[TELEMETRY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
@doc("This document", auth="none", responses={200: Content("application/json", {"type": "object"})})
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])

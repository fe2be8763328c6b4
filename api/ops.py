"""Operations: liveness, readiness, Prometheus metrics and the OpenAPI document.

``ops_routes`` (/healthz, /readyz, /metrics) are on the public listener unless ``ops_port`` is set:
then they are served on a listener of their own (``ops_listener_ctx``) and the public one has none
of them. With ``metrics_token`` set, /metrics wants it as a bearer token (wherever it is served).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from quotas.nodes import node_states

from . import models, problems
from .appkeys import HEALTH_CHECK, KEYS, OPENAPI, OPS_OF, REDIS, SETTINGS, TELEMETRY, TURN
from .auth import bearer_token
from .middleware import add_request_id_header, problem_middleware
from .openapi import Content, doc
from .problems import Problem

log = logging.getLogger("backupplus.api")
routes = web.RouteTableDef()  # the public listener's, always
ops_routes = web.RouteTableDef()  # on the public listener, or on the ops listener when ops_port is set


def _broker_app(request: web.Request) -> web.Application:
    """The broker app whose state an ops route reports: the request's own, or the one the ops
    listener belongs to."""
    return request.app.get(OPS_OF) or request.app


@ops_routes.get("/healthz")
@doc("Liveness: the process answers (503 while a Redis it owns is down)", auth="none",
     responses={200: models.Health}, errors=[problems.STORE_UNAVAILABLE])
async def healthz(request: web.Request) -> web.Response:
    check = _broker_app(request).get(HEALTH_CHECK)
    reason = check() if check is not None else None
    if reason is not None:
        raise Problem(problems.STORE_UNAVAILABLE, reason, headers={"Retry-After": "2"})
    return web.json_response({"status": "alive"})


@ops_routes.get("/readyz")
@doc(
    "Readiness: Redis answers and a media node is ready",
    auth="none",
    responses={200: models.Readiness},
    errors=[problems.STORE_UNAVAILABLE, problems.NO_MEDIA_NODE, problems.KEY_RING_MISMATCH],
)
async def readyz(request: web.Request) -> web.Response:
    try:
        redis = _broker_app(request)[REDIS]
        await redis.ping()
        nodes = await node_states(redis)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means not ready
        log.warning("readyz: Redis is unreachable: %s: %s", type(exc).__name__, exc)
        raise Problem(problems.STORE_UNAVAILABLE, "Redis is unreachable") from None
    keystore = _broker_app(request).get(KEYS)
    if keystore is not None and keystore.problem is not None:
        raise Problem(problems.KEY_RING_MISMATCH, keystore.problem)
    if nodes["ready"] == 0:
        raise Problem(problems.NO_MEDIA_NODE, "Redis is reachable but no media node is ready", media_nodes=nodes)
    turn = request.app.get(TURN)
    return web.json_response(
        {"status": "ready", "redis": "ok", "media_nodes": nodes, "turn": turn.public() if turn else None}
    )


@ops_routes.get("/metrics")
@doc(
    "Prometheus metrics: the ledger's usage and this process's counters (with BACKUPPLUS_METRICS_TOKEN "
    "set, that bearer token is required)",
    auth="none",
    responses={200: Content(CONTENT_TYPE_LATEST.split(";")[0], {"type": "string"})},
    errors=[problems.UNAUTHORIZED, problems.STORE_UNAVAILABLE],
)
async def metrics(request: web.Request) -> web.Response:
    app = _broker_app(request)
    wanted = app[SETTINGS].metrics_token
    if wanted is not None and not hmac.compare_digest(
        bearer_token(request).encode(), wanted.get_secret_value().encode()
    ):
        raise Problem(problems.UNAUTHORIZED, "Send Authorization: Bearer <metrics token>",
                      headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body = await app[TELEMETRY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
@doc("This document", auth="none", responses={200: Content("application/json", {"type": "object"})})
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def ops_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """The ops listener (settings.ops_host:ops_port): /healthz, /readyz, /metrics of ``app``, with the
    same problem answers. A cleanup context of the broker app, after the one that connects Redis."""
    settings = app[SETTINGS]
    ops = web.Application(middlewares=[problem_middleware])
    ops[OPS_OF], ops[SETTINGS], ops[TELEMETRY] = app, settings, app[TELEMETRY]
    ops.on_response_prepare.append(add_request_id_header)
    ops.add_routes(ops_routes)
    runner = web.AppRunner(ops, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.ops_host, settings.ops_port, reuse_address=True).start()
        log.info("ops routes (/healthz, /readyz, /metrics) on %s:%s", settings.ops_host, settings.ops_port)
        yield
    finally:
        await runner.cleanup()

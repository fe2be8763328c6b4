"""Server-sent events of the audit trail (the console's live view), over ``broker.auditfeed``.

Each SSE event is one decision (``event: audit``, data: the audit event as JSON with its outage); its
``id`` is the cursor that resumes right after it, so ``Last-Event-ID`` (the header an EventSource
sends when it reconnects by itself, or ``last_event_id`` in the query for a client that reconnects
with a fresh stream ticket) resumes without loss or repeat. The stream opens with ``event: ready``
(its id is the cursor of where it starts) and ends with ``event: close`` (``reason``: ``lifetime``,
``shutdown`` or ``store_unavailable``), after which the client reconnects; heartbeats are comments.

Per process: at most ``sse_max_streams`` streams (503 ``too_many_streams`` beyond), one audit reader
(``AuditHub``) for all of them, and every stream closed when the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.exceptions
from aiohttp import web
from aiohttp_sse import sse_response

from broker.auditfeed import AuditEvent, AuditHub, Feed, InvalidCursor
from broker.outages import iso_ms
from infra.redisconn import StorePolicy, connect

from . import problems
from .appkeys import AUDIT_HUB, BROKER, KEYS, SETTINGS, STREAMS
from .auth import authenticate, verify_stream_ticket
from .problems import Problem
from .streams import StreamRegistry

log = logging.getLogger("backupplus.livefeed")
MAX_BACKLOG = 50
_CLIENT_GONE = (ConnectionResetError, RuntimeError, TimeoutError)
_STORE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


def authorise(request: web.Request) -> None:
    """An operator: by its bearer token, or by a stream ticket in ``?ticket=`` (EventSource)."""
    settings, ring = request.app[SETTINGS], request.app[KEYS].ring
    ticket = request.query.get("ticket")
    if ticket is None:
        authenticate(request, settings.operator_digests, ring).require_operator()
        return
    now_ms = int(request.app[BROKER].clock().timestamp() * 1000)
    if not verify_stream_ticket(ring.accepted_keys("stream"), ticket, settings.operator_digests, now_ms):
        raise Problem(problems.UNAUTHORIZED, "The stream ticket is invalid or has expired: get a new one "
                      "(POST /v1/events/tickets)", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def event_data(event: AuditEvent) -> dict[str, Any]:
    return {**event.fields, "outage": event.outage, "id": event.id, "at_iso": iso_ms(event.fields.get("at"))}


def _cursor(request: web.Request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or None


def _backlog(request: web.Request) -> int:
    raw = request.query.get("backlog", "0")
    if not raw.isdigit() or int(raw) > MAX_BACKLOG:
        raise Problem(problems.VALIDATION_FAILED, errors=[
            {"loc": ["query", "backlog"], "msg": f"must be an integer from 0 to {MAX_BACKLOG}", "type": "int"}])
    return int(raw)


async def serve_feed(request: web.Request, outage: str | None) -> web.StreamResponse:
    """Streams the audit feed of one outage (or of every outage) until the client goes, the stream's
    lifetime ends or the app stops."""
    authorise(request)
    settings, registry = request.app[SETTINGS], request.app[STREAMS]
    if outage is not None:
        await request.app[BROKER].outages.require(outage)
    try:
        feed = Feed(request.app[AUDIT_HUB], outage, _cursor(request), _backlog(request))
    except InvalidCursor as exc:
        raise Problem(problems.VALIDATION_FAILED, errors=[
            {"loc": ["header", "Last-Event-ID"], "msg": str(exc), "type": "value_error"}]) from None
    loop = asyncio.get_running_loop()
    with registry.slot():
        await feed.open()
        try:
            async with sse_response(request, ping_interval=settings.sse_heartbeat_s) as resp:
                with contextlib.suppress(*_CLIENT_GONE):  # the client went away: nothing more to say
                    await resp.send(json.dumps({"outage": outage, "resumed": _cursor(request) is not None}),
                                    id=feed.cursor, event="ready", retry=2000)
                    reason = await _pump(request, resp, feed, registry, loop.time() + settings.sse_max_lifetime_s)
                    if reason is not None:
                        await resp.send(json.dumps({"reason": reason}), event="close")
        finally:
            feed.close()
    return resp


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pump(request: web.Request, resp: Any, feed: Feed, registry: StreamRegistry, deadline: float
                ) -> str | None:
    """Sends events until the client leaves (None) or the stream must end (the reason why)."""
    loop = asyncio.get_running_loop()
    while resp.is_connected() and not _gone(request):
        if registry.stopping.is_set():
            return "shutdown"
        if loop.time() > deadline:
            return "lifetime"
        try:
            event = await feed.next(timeout=0.25)
        except _STORE_ERRORS as exc:
            log.warning("live feed: Redis unavailable (%s); closing the stream", exc)
            return "store_unavailable"
        if event is None:
            continue
        await resp.send(json.dumps(event_data(event)), id=feed.cursor, event="audit")
    return None


async def audit_hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the process's audit reader (a Redis connection of its own for XREAD BLOCK)."""
    settings = app[SETTINGS]
    assert settings.redis_url
    block_s = settings.sse_block_ms / 1000
    policy = StorePolicy(command_timeout_s=block_s + 1.0, connect_timeout_s=settings.redis_connect_timeout_s,
                         retries=0, retry_budget_s=block_s + 1.0, pool_timeout_s=1.0)
    reader = connect(settings.redis_url, max_connections=2, policy=policy, decode_responses=True)
    broker = app[BROKER]
    hub = AuditHub(app[BROKER].redis, reader, broker.clock, block_ms=settings.sse_block_ms)
    app[AUDIT_HUB] = hub
    app[STREAMS] = StreamRegistry(settings.sse_max_streams)
    stopping = asyncio.Event()
    task = asyncio.create_task(hub.run(stopping), name="backupplus-audit-feed")
    yield
    stopping.set()
    done, _ = await asyncio.wait({task}, timeout=block_s + 3)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await reader.aclose(close_connection_pool=True)


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: every open stream says ``close`` to its client and ends (before the server
    waits for its handlers), so that a stop is not held up by consoles."""
    registry = app.get(STREAMS)
    if registry is not None:
        await registry.close_all(timeout=5.0)

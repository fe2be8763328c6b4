"""The aiohttp application factory: API, pages, metrics and (optionally) an in-process media node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from broker.service import Broker
from broker.telemetry import Telemetry
from broker.turn import TurnService
from broker.webhooks import WebhookWorker
from infra.redisconn import StoreClient, check_store, store_client
from infra.settings import Settings
from quotas.secret import KeyStore

from . import headers, ops, v1
from .appkeys import BROKER, KEYS, REDIS, SETTINGS, TELEMETRY, TURN
from .livefeed import audit_hub_ctx, close_streams
from .middleware import add_request_id_header, problem_middleware
from .openapi import publish_openapi

log = logging.getLogger("backupplus.app")


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url, "create_app needs settings.redis_url (serve starts a private Redis first)"
    client = await _checked_store(settings)
    app[REDIS] = client
    app[KEYS] = await KeyStore.load(client, seed=settings.root_secret())
    broker = Broker(client, settings)
    await broker.start()
    app[BROKER] = broker
    app[TELEMETRY] = Telemetry(client)
    yield
    await client.aclose(close_connection_pool=True)


async def _checked_store(settings: Settings) -> StoreClient:
    """The store client (timeouts, retries, write concern), after the start-up checks of its Redis."""
    client = store_client(settings, decode_responses=True, health_check_interval=10)
    try:
        await check_store(client)
    except BaseException:
        await client.aclose(close_connection_pool=True)
        raise
    return client


async def _periodic(name: str, interval: float, step: Callable[[], Awaitable[object]],
                    stopping: asyncio.Event) -> None:
    """Runs ``step`` every ``interval`` seconds until ``stopping`` is set; a failure waits for the next turn."""
    while not stopping.is_set():
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - Redis down: try again next time
            log.warning("%s failed: %s", name, exc)
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({waiter}, timeout=interval)
        waiter.cancel()


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """The broker's background work, in every broker process (each step is safe concurrently): the
    lease sweeper and the outages' lifecycle, and the ledger's audit."""
    broker, settings = app[BROKER], app[SETTINGS]
    # Stopped by an event, not by cancelling it: a cancel that lands inside a redis-py call can be
    # swallowed there, and the task would then sleep on forever.
    stopping = asyncio.Event()
    tasks = {
        asyncio.create_task(_periodic("background tick", settings.sweep_interval_s, broker.tick, stopping),
                            name="backupplus-tick"),
        asyncio.create_task(_periodic("ledger audit", settings.audit_interval_s, broker.audit, stopping),
                            name="backupplus-audit"),
        # a rotated key (backupplus secrets rotate) reaches this process within keys.refresh_s
        asyncio.create_task(_periodic("key ring reload", app[KEYS].refresh_s, app[KEYS].reload, stopping),
                            name="backupplus-keyring"),
    }
    yield
    stopping.set()
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:  # a step stuck on an unreachable Redis: give up on it
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Delivers queued webhook events; every process runs a worker (broker.webhooks)."""
    if not app[SETTINGS].webhook_urls:
        yield
        return
    worker = WebhookWorker(app[REDIS], app[SETTINGS])
    app[BROKER].webhooks.wake = worker.wake
    worker.start()
    yield
    await worker.stop()


def create_app(
    settings: Settings, *, media_plane: Callable[[web.Application], None] | None = None, pages: bool = True,
    turn: TurnService | None = None,
) -> web.Application:
    """The broker's app. ``media_plane`` (given by the composition root) attaches the media plane:
    it sets ``MEDIA_GATEWAY`` and adds its own cleanup contexts; without it offers answer 503.
    ``turn``: the TURN servers admissions hand out credentials for (default: --turn-url's, or none).
    Every route must carry ``@doc`` (api/openapi.py): the app will not start otherwise."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[TURN] = turn or TurnService.external(settings)
    headers.install(app)
    app.on_response_prepare.append(add_request_id_header)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(audit_hub_ctx)
    app.on_shutdown.append(close_streams)
    for table in v1.ROUTES:
        app.add_routes(table)
    if settings.ops_port is None:
        app.add_routes(ops.ops_routes)
    else:  # /healthz, /readyz, /metrics on a listener of their own, not this one
        app.cleanup_ctx.append(ops.ops_listener_ctx)
    app.add_routes(ops.routes)
    if pages:
        from .pages import setup_pages

        setup_pages(app)
    if media_plane is not None:
        media_plane(app)
    app.on_startup.append(publish_openapi)
    return app

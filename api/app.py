"""The aiohttp application factory: API, pages, metrics and (optionally) an in-process media node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from broker.service import Broker
from broker.telemetry import Telemetry
from broker.webhooks import WebhookWorker
from infra.redisconn import StoreClient, check_store, store_client
from infra.settings import Settings
from quotas.secret import shared_secret

from . import headers, ops, v1
from .appkeys import BROKER, REDIS, SECRET, SETTINGS, TELEMETRY
from .middleware import add_request_id_header, problem_middleware
from .openapi import publish_openapi

log = logging.getLogger("backupplus.app")


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url, "create_app needs settings.redis_url (serve starts a private Redis first)"
    client = await _checked_store(settings)
    app[REDIS] = client
    app[SECRET] = await shared_secret(client)
    app[BROKER] = Broker(client, settings)
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


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Lease sweeper and outage expiry: run in every broker process; both are safe concurrently."""
    broker = app[BROKER]
    interval = app[SETTINGS].sweep_interval_s

    # Stopped by an event, not by cancelling it: a cancel that lands inside a redis-py call can be
    # swallowed there, and the task would then sleep on forever.
    stopping = asyncio.Event()

    async def loop() -> None:
        while not stopping.is_set():
            try:
                await broker.sweep_leases()
                await broker.expire_due()
            except Exception as exc:  # noqa: BLE001 - Redis down: try again next tick
                log.warning("background sweep failed: %s", exc)
            waiter = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter}, timeout=interval)
            waiter.cancel()

    task = asyncio.create_task(loop(), name="backupplus-sweeper")
    yield
    stopping.set()
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:  # a sweep stuck on an unreachable Redis: give up on it
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
    settings: Settings, *, media_plane: Callable[[web.Application], None] | None = None, pages: bool = True
) -> web.Application:
    """The broker's app. ``media_plane`` (given by the composition root) attaches the media plane:
    it sets ``MEDIA_GATEWAY`` and adds its own cleanup contexts; without it offers answer 503.
    Every route must carry ``@doc`` (api/openapi.py): the app will not start otherwise."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    headers.install(app)
    app.on_response_prepare.append(add_request_id_header)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.add_routes(v1.routes)
    app.add_routes(ops.routes)
    if pages:
        from .pages import setup_pages

        setup_pages(app)
    if media_plane is not None:
        media_plane(app)
    app.on_startup.append(publish_openapi)
    return app

"""Wires the media plane into the broker's aiohttp app: the router as the broker's ``MediaGateway``,
and (unless ``--no-media``) a media node in the same process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from api.appkeys import MEDIA_GATEWAY, REDIS, SETTINGS
from broker.errors import MediaNodeFailed
from broker.errors import NoMediaNode as BrokerNoMediaNode
from media import srtp
from media.errors import MediaNodeError, NoMediaNode
from media.internal import internal_app
from media.node import MediaNode
from media.routing import MediaRouter


class RouterGateway:
    """``broker.media.MediaGateway`` over the media router: media errors become the broker's."""

    def __init__(self, router: MediaRouter) -> None:
        self.router = router

    async def offer(self, participant: dict[str, Any], sdp: str, sdp_type: str) -> dict[str, Any]:
        try:
            return await self.router.offer(participant, sdp, sdp_type)
        except NoMediaNode as exc:
            raise BrokerNoMediaNode(str(exc) or None, retry_after=5) from None
        except MediaNodeError as exc:
            raise MediaNodeFailed(str(exc) or None, media_code=exc.code) from None


@dataclass
class MediaPlane:
    router: MediaRouter
    node: MediaNode | None = None  # the in-process node once started (None with --no-media)


# app[MEDIA_PLANE].node: the in-process node (drain it on SIGTERM: node.begin_drain() / await node.drain(t)).
MEDIA_PLANE = web.AppKey("media_plane", MediaPlane)


def media_plane(*, in_process_node: bool) -> Callable[[web.Application], None]:
    """The hook ``api.app.create_app`` calls to attach the media plane."""

    def attach(app: web.Application) -> None:
        attach_media(app, in_process_node=in_process_node)

    return attach


def attach_media(app: web.Application, *, in_process_node: bool) -> None:
    """Sets app[MEDIA_GATEWAY] (and app[MEDIA_PLANE]); with ``in_process_node`` also runs a media node in
    this process, whose /internal/media/offer is served on a listener of its own (settings.internal_host
    and internal_port, loopback by default), never on the public one. Must be called before the app
    starts, after the cleanup_ctx that sets SETTINGS and REDIS."""
    if in_process_node:
        srtp.install()  # the media node's process-wide patch: SRTP keeps the GIL
    plane = MediaPlane(router=MediaRouter())
    app[MEDIA_GATEWAY] = RouterGateway(plane.router)
    app[MEDIA_PLANE] = plane

    async def media_ctx(app: web.Application) -> AsyncIterator[None]:
        settings, redis = app[SETTINGS], app[REDIS]
        node = None
        internal: web.AppRunner | None = None
        if in_process_node:
            internal, url = await _internal_listener(settings, lambda: plane.node)
            node = MediaNode(settings, url=url)
            await node.start(redis)
            plane.node = node
        plane.router.bind(redis, settings, node)
        try:
            yield
        finally:
            await plane.router.close()
            if node is not None:
                plane.node = None
                await node.stop(release_state="left/node_stopped")
            if internal is not None:
                await internal.cleanup()

    app.cleanup_ctx.append(media_ctx)


async def _internal_listener(settings: Any, get_node: Callable[[], MediaNode | None]) -> tuple[web.AppRunner, str]:
    """Starts the internal listener; (its runner, the URL the node registers: settings.internal_url
    or http://internal_host:<the port bound>)."""
    runner = web.AppRunner(internal_app(get_node), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.internal_host, settings.internal_port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = settings.internal_port or int(runner.addresses[0][1])
    host = settings.internal_host if ":" not in settings.internal_host else f"[{settings.internal_host}]"
    return runner, (settings.internal_url or f"http://{host}:{port}").rstrip("/")

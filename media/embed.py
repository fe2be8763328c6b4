"""Wires the media plane into the broker's aiohttp app (``backupplus serve``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from api.appkeys import MEDIA_ROUTER, REDIS, SETTINGS
from media.internal import add_internal_routes
from media.node import MediaNode
from media.routing import MediaRouter


@dataclass
class MediaPlane:
    router: MediaRouter
    node: MediaNode | None = None  # the in-process node once started (None with --no-media)


# app[MEDIA_PLANE].node: the in-process node (drain it on SIGTERM: node.begin_drain() / await node.drain(t)).
MEDIA_PLANE = web.AppKey("media_plane", MediaPlane)


def attach_media(app: web.Application, *, in_process_node: bool) -> None:
    """Sets app[MEDIA_ROUTER] (and app[MEDIA_PLANE]); with ``in_process_node`` also runs a media node in
    this process, reachable at settings.base_url + /internal/media/offer. Must be called before the
    app starts, after the cleanup_ctx that sets SETTINGS and REDIS."""
    plane = MediaPlane(router=MediaRouter())
    app[MEDIA_ROUTER] = plane.router
    app[MEDIA_PLANE] = plane
    if in_process_node:
        add_internal_routes(app, lambda: plane.node)

    async def media_ctx(app: web.Application) -> AsyncIterator[None]:
        settings, redis = app[SETTINGS], app[REDIS]
        node = None
        if in_process_node:
            node = MediaNode(settings, url=settings.base_url)
            await node.start(redis)
            plane.node = node
        plane.router.bind(redis, settings, node)
        try:
            yield
        finally:
            await plane.router.close()
            if node is not None:
                plane.node = None
                await node.stop(release_state="failed")

    app.cleanup_ctx.append(media_ctx)

"""attach_media: the in-process node under the broker's app, reached directly and over signed HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from api.appkeys import REDIS, SETTINGS
from backupplus.media_plane import MEDIA_PLANE, attach_media
from infra.redisproc import free_port
from infra.settings import Settings
from media.errors import NoMediaNode
from media.routing import MediaRouter
from quotas import keys
from quotas.ledger import PortLedger
from quotas.nodes import node_states
from tests.support.media_clients import Client, ToneTrack, admit, seed_conference, until

pytestmark = [pytest.mark.media, pytest.mark.timeout(60)]


async def test_attach_media_in_process_node(redis, redis_url):
    port = free_port()
    settings = Settings(redis_url=redis_url, port=port, media_lease_s=3.0)  # unrenewed, a lease ends soon
    app = web.Application()

    async def lead_ctx(app: web.Application):  # what the lead's serve does before attach_media
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        app[SETTINGS] = settings
        app[REDIS] = client
        yield
        await client.aclose()

    app.cleanup_ctx.append(lead_ctx)
    attach_media(app, in_process_node=True)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    ledger = PortLedger(redis)
    clients: list[Client] = []
    remote_router = MediaRouter(redis, settings)  # another broker process: no node of its own
    try:
        node = app[MEDIA_PLANE].node
        # the node's internal routes are on a listener of their own (loopback), not the app's port
        assert node is not None and node.url.startswith("http://127.0.0.1:") and node.url != f"http://127.0.0.1:{port}"
        assert await node_states(redis) == {"ready": 1, "draining": 0, "dead": 0}
        oid, cid = await seed_conference(ledger)
        for i, router in enumerate((app[MEDIA_PLANE].router, remote_router)):  # direct call, then signed HTTP
            c = Client(
                await admit(ledger, oid, cid, f"p{i}", "audio"),
                audio=ToneTrack(400 + 300 * i),
                want_video=False,
            )
            clients.append(c)
            await c.connect(router.offer)
            await c.wait_connected()
        assert await redis.get(keys.media_node_of(oid)) == node.node_id
        assert len(node.sessions) == 2
        deadline = time.monotonic() + 5
        while clients[0].tone_level(700, 0.5) < 200:
            assert time.monotonic() < deadline, "p0 does not hear p1"
            await asyncio.sleep(0.1)
        # draining: no new outage goes there
        node.begin_drain()
        await asyncio.sleep(0.1)
        other, other_cid = await seed_conference(ledger)
        with pytest.raises(NoMediaNode):
            await remote_router.offer(
                await admit(ledger, other, other_cid, "late", "audio"),
                clients[0].pc.localDescription.sdp,
                "offer",
            )
    finally:
        for c in clients:
            await c.close()
        await remote_router.close()
        await runner.cleanup()  # closes every peer connection, leaves the registry
    assert await node_states(redis) == {"ready": 0, "draining": 0, "dead": 0}

    async def ports_back() -> bool:  # the hung-up clients' leases, no longer renewed, run out
        await ledger.reclaim_expired(oid)
        return (await ledger.usage(oid))["in_use"]["audio"] == 0

    await until(ports_back, 6, step=0.2)

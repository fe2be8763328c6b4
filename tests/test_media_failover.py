"""Node registry, kill -9 failover (ports back through leases, conference placed again) and SIGTERM drain.

Standalone nodes run as real subprocesses (``python -m media.server``) against the test Redis."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from infra.redisproc import free_port
from infra.settings import Settings
from media.errors import NoMediaNode
from media.internal import OFFER_PATH, SIGNATURE_HEADER
from media.node import MediaNode
from media.routing import MediaRouter
from quotas import keys
from quotas import nodes as registry
from quotas.ledger import PortLedger
from quotas.nodes import node_states
from tests.support.media_clients import Client, ToneTrack, admit, seed_conference, until

pytestmark = [pytest.mark.media, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[1]




class NodeProcess:
    def __init__(self, redis_url: str, node_id: str, *extra: str) -> None:
        self.redis_url, self.node_id, self.extra = redis_url, node_id, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> NodeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "media.server",
            "--redis-url",
            self.redis_url,
            "--port",
            str(self.port),
            "--node-id",
            self.node_id,
            "--log-level",
            "WARNING",
            "--remote-candidates",
            "loopback",  # the clients are on this machine
            *self.extra,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert b"ready at" in line, line
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def procs():
    started: list[NodeProcess] = []
    yield started
    for p in started:
        await p.stop()


async def test_kill_node_ports_back_and_replaced(redis, redis_url, procs):
    ledger = PortLedger(redis)
    a = await NodeProcess(redis_url, "node-a").start()
    procs.append(a)
    router = MediaRouter(redis, Settings())
    oid, cid = await seed_conference(ledger)
    p1 = await admit(ledger, oid, cid, "first", "audio")
    c1 = Client(p1, audio=ToneTrack(440), want_video=False)
    node_b: MediaNode | None = None
    c2: Client | None = None
    try:
        # unsigned / badly signed internal calls are refused
        async with (
            aiohttp.ClientSession() as http,
            http.post(a.url + OFFER_PATH, data=b"{}", headers={SIGNATURE_HEADER: "sha256=00"}) as resp,
        ):
            assert resp.status == 401
        await c1.connect(router.offer)
        await c1.wait_connected()
        assert await redis.get(keys.media_node_of(oid)) == "node-a"
        nodes = await registry.live_nodes(redis)
        assert nodes["node-a"].url == a.url and nodes["node-a"].capacity == 36

        async def renewed_connected() -> bool:
            found = await ledger.participant(oid, p1["id"])
            return found is not None and found.state == "connected"

        await until(renewed_connected, 5)
        await until(lambda: registry.live_nodes(redis), 3)
        assert (await registry.live_nodes(redis))["node-a"].load == 1

        node_b = MediaNode(Settings(media_remote_candidates="loopback"), url="http://127.0.0.1:9", node_id="node-b")
        await node_b.start(redis)
        router_b = MediaRouter(redis, Settings(), local_node=node_b)

        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        killed = time.monotonic()

        async def ports_back() -> bool:
            await ledger.sweep()
            return (await ledger.usage(oid))["in_use"]["audio"] == 0

        await until(ports_back, 12, step=0.25)
        assert time.monotonic() - killed <= 10.0
        await until(lambda: node_states(redis), 1)
        assert (await node_states(redis))["dead"] == 1

        # the next offer places the outage on the surviving node
        p2 = await admit(ledger, oid, cid, "second", "audio")
        c2 = Client(p2, audio=ToneTrack(660), want_video=False)
        await c2.connect(router_b.offer)
        await c2.wait_connected()
        assert await redis.get(keys.media_node_of(oid)) == "node-b"
        assert p2["id"] in node_b.sessions
        await router_b.close()
    finally:
        await c1.close()
        if c2 is not None:
            await c2.close()
        if node_b is not None:
            await node_b.stop()
        await router.close()


async def test_sigterm_drains(redis, redis_url, procs):
    ledger = PortLedger(redis)
    c = await NodeProcess(redis_url, "node-c", "--drain-timeout", "30").start()
    procs.append(c)
    router = MediaRouter(redis, Settings())
    oid, cid = await seed_conference(ledger)
    p1 = await admit(ledger, oid, cid, "caller", "audio")
    client = Client(p1, audio=ToneTrack(440), want_video=False)
    try:
        await client.connect(router.offer)
        await client.wait_connected()
        assert c.proc is not None
        c.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            nodes = await registry.live_nodes(redis)
            return "node-c" in nodes and nodes["node-c"].state == "draining"

        await until(draining, 3)
        async with aiohttp.ClientSession() as http, http.get(c.url + "/readyz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "draining"
        assert (await node_states(redis))["draining"] == 1
        # no new conferences on a draining node
        other, other_cid = await seed_conference(ledger)
        p_other = await admit(ledger, other, other_cid, "late", "audio")
        with pytest.raises(NoMediaNode):
            await router.offer(p_other, client.pc.localDescription.sdp, "offer")
        # the running call goes on
        await asyncio.sleep(1.0)
        assert client.pc.connectionState == "connected" and c.proc.returncode is None
        level = client.tone_level(440)
        assert level < 50  # alone: hears nobody (mix-minus), but the stream is alive
        frames_before = len(client.audio_chunks)
        await asyncio.sleep(0.5)
        assert len(client.audio_chunks) >= min(frames_before + 10, client.audio_chunks.maxlen or 0)
        # the call ends -> the node exits
        await client.close()
        await asyncio.wait_for(c.proc.wait(), 15)
        assert c.proc.returncode == 0
        assert "node-c" not in await registry.live_nodes(redis)

        async def port_back() -> bool:  # the hung-up caller's lease, no longer renewed, runs out
            await ledger.reclaim_expired(oid)
            return (await ledger.usage(oid))["in_use"]["audio"] == 0

        await until(port_back, 12, step=0.25)
    finally:
        await client.close()
        await router.close()

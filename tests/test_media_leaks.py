"""No leaks: after 50 join/leave cycles the process's fds, threads and asyncio tasks are back to baseline."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time

import pytest

from infra.settings import Settings
from media.node import MediaNode
from media.routing import MediaRouter
from quotas import keys
from quotas.ledger import PortLedger
from tests.support.media_clients import Client, ToneTrack, admit, seed_conference, until

pytestmark = [pytest.mark.media, pytest.mark.slow, pytest.mark.timeout(120)]

CYCLES = 50


def snapshot() -> dict:
    gc.collect()
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        # asyncio's default executor (aiortc encodes there) grows on demand up to its max_workers: count
        # its threads apart; every other thread (decoders, mixers) must be back to baseline
        "threads": sum(1 for t in threading.enumerate() if not t.name.startswith("asyncio_")),
        "pool": sum(1 for t in threading.enumerate() if t.name.startswith("asyncio_")),
        "tasks": len(asyncio.all_tasks()),
    }


async def settle(node: MediaNode, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (node.sessions or node.rooms) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let closing transports finish their last callbacks


async def test_join_leave_cycles_leave_nothing_behind(redis):
    ledger = PortLedger(redis)
    node = MediaNode(Settings(media_lease_s=3.0, media_remote_candidates="loopback"), url="http://127.0.0.1:9")  # hung-up guests' leases end soon
    await node.start(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger, audio=60)  # hung-up guests hold their port for their lease
    # a participant who stays for the whole test, so the room lives on as others come and go
    anchor = Client(await admit(ledger, oid, cid, "anchor", "audio"), audio=ToneTrack(300), want_video=False)
    await anchor.connect(router.offer)
    await anchor.wait_connected()

    async def cycle(i: int) -> None:
        p = await admit(ledger, oid, cid, f"guest{i}", "audio")
        c = Client(p, audio=ToneTrack(500), want_video=False)
        try:
            await c.connect(router.offer)
            await c.wait_connected()
            while not (p["id"] in node.sessions and node.sessions[p["id"]].connected):
                await asyncio.sleep(0.02)
            if i % 2:  # the participant hangs up
                await c.close()
            else:  # DELETE participant: the broker releases and publishes, the node closes
                await ledger.release(oid, p["id"], "left")
                await redis.publish(
                    keys.EVENTS,
                    json.dumps({"type": "participant_left", "outage": oid, "participant": p["id"]}),
                )
            while p["id"] in node.sessions:
                await asyncio.sleep(0.02)
        finally:
            await c.close()

    try:
        for i in range(3):  # warm-up: thread pools and caches reach their steady size
            await cycle(i)
        await settle(node, 0.5)
        while len(node.sessions) != 1:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        base = snapshot()
        for i in range(CYCLES):
            await cycle(i)
        async def only_the_anchor() -> bool:  # hung-up guests' leases, no longer renewed, run out
            await ledger.reclaim_expired(oid)
            return (await ledger.usage(oid))["in_use"]["audio"] == 1

        await until(only_the_anchor, 6, step=0.2)
        await asyncio.sleep(0.5)
        after = snapshot()
        assert after["fds"] <= base["fds"] + 2, (base, after)
        assert after["threads"] <= base["threads"], (base, after)
        assert after["pool"] <= min(32, (os.cpu_count() or 1) + 4), (base, after)
        assert after["tasks"] <= base["tasks"] + 1, (base, after)
        assert len(node.sessions) == 1 and len(node.rooms) == 1
    finally:
        await anchor.close()
        await settle(node)
        await node.stop()
        await router.close()

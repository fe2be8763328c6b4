"""Faults of a broker process: kill -9 (its admitted ports expire by their leases while the other
broker serves on) and SIGTERM (requests in flight finish before it exits 0)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from infra.redisproc import RedisServer

from ..support.brokers import BrokerProcess, start_all
from ..support.ledger_probe import live_leases
from ..support.netns import DelayRelay
from ..support.workload import admit, get_status, seed


async def test_broker_kill_9_ports_expire_while_the_other_serves(own_redis: RedisServer, tmp_path: Path) -> None:
    lease = {"BACKUPPLUS_ADMISSION_LEASE_S": "3"}  # the short form; 25 s in production
    a, b = start_all([BrokerProcess(own_redis.url, tmp_path / f"{n}.log", env=lease) for n in "ab"])
    watch = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        target = await seed(a.base_url)
        async with aiohttp.ClientSession() as s:
            granted = [await admit(s, a.base_url, target, "video") for _ in range(4)]
            assert [g.status for g in granted] == [201] * 4
            a.kill()
            t0 = time.monotonic()
            served = []
            while (await live_leases(watch, target.outage))["video"] > 0:
                assert time.monotonic() - t0 < 10, "the dead broker's ports did not come back"
                served.append(await get_status(s, f"{b.base_url}/v1/outages/{target.outage}"))
                await asyncio.sleep(0.2)
            back = time.monotonic() - t0
            assert served and {x.status for x in served} == {200}
            full = [await admit(s, b.base_url, target, "video") for _ in range(10)]
            assert [x.status for x in full] == [201] * 10  # all 10 video ports free again
        print(f"\nbroker kill -9: its 4 ports back after {back:.1f} s (lease 3 s + sweep 2 s); "
              f"the other broker answered {len(served)} reads meanwhile")
    finally:
        await watch.aclose()
        a.stop()
        b.stop()


async def test_sigterm_lets_requests_in_flight_finish(own_redis: RedisServer, tmp_path: Path) -> None:
    with DelayRelay("127.0.0.1", own_redis.port) as relay:
        broker = start_all([BrokerProcess(f"redis://127.0.0.1:{relay.port}/0", tmp_path / "b.log")])[0]
        try:
            target = await seed(broker.base_url)
            relay.delay_s = 0.1  # each Redis round trip 200 ms: admissions are in flight for a while
            async with aiohttp.ClientSession() as s:
                flight = [asyncio.create_task(admit(s, broker.base_url, target, "audio")) for _ in range(6)]
                await asyncio.sleep(0.15)
                assert broker.process is not None
                broker.process.send_signal(15)
                answers = await asyncio.gather(*flight)
                code = await asyncio.to_thread(broker.process.wait, 40)
            assert [x.status for x in answers] == [201] * 6, [x.status for x in answers]
            assert code == 0
        finally:
            broker.stop()

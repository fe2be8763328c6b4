"""The key ring lost from Redis under running brokers (issue 14's row "the secret key lost, a broker
started: it minted a new secret; the same join link got 200 on old brokers and 401 on the new one"),
on real broker processes sharing one real Redis and no configured secret."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from infra.redisproc import RedisServer
from quotas import keys

from ..support.brokers import BrokerProcess, start_all
from ..support.workload import admit, seed


async def test_a_lost_key_ring_is_written_back_and_links_live_on(own_redis: RedisServer, tmp_path: Path) -> None:
    brokers = start_all([BrokerProcess(own_redis.url, tmp_path / f"b{i}.log") for i in range(2)])
    control = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    late: BrokerProcess | None = None
    try:
        target = await seed(brokers[0].base_url)
        ring_before = await control.get(keys.KEYRING)
        await control.delete(keys.KEYRING)
        t0 = time.monotonic()
        while await control.get(keys.KEYRING) is None:  # the running brokers write their copy back
            assert time.monotonic() - t0 < 10, "nobody wrote the key ring back"
            await asyncio.sleep(0.1)
        took = time.monotonic() - t0
        assert await control.get(keys.KEYRING) == ring_before
        late = BrokerProcess(own_redis.url, tmp_path / "late.log").start()
        async with aiohttp.ClientSession() as s:
            answers = [await admit(s, b.base_url, target, "audio") for b in (*brokers, late)]
        assert [a.status for a in answers] == [201, 201, 201], [(a.status, a.body) for a in answers]
        print(f"\nkey ring lost: written back {took:.1f} s later; the old link admitted on 3 of 3 brokers")
    finally:
        await control.aclose()
        for b in (*brokers, late):
            if b is not None:
                b.stop()


async def test_a_broker_never_mints_a_ring_into_a_store_with_data(own_redis: RedisServer, tmp_path: Path) -> None:
    first = BrokerProcess(own_redis.url, tmp_path / "first.log").start()
    control = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        await seed(first.base_url)
        first.stop()  # every process gone: nobody holds a copy
        await control.delete(keys.KEYRING)
        lone = BrokerProcess(own_redis.url, tmp_path / "lone.log").start(wait=False)
        assert lone.process is not None
        assert lone.process.wait(30) == 1
        assert "no key ring" in lone.log() and "BACKUPPLUS_SECRET" in lone.log()
        assert await control.get(keys.KEYRING) is None  # it wrote nothing
    finally:
        await control.aclose()
        first.stop()

"""The chaos harness itself: the faketime launcher moves a process's wall clock (and only that),
a lost key is gone, a namespace is removed after use even when the test fails, the relay delays."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis

from quotas import keys

from ..support.brokers import faketime_prefix
from ..support.ledger_probe import live_leases, lose_key
from ..support.netns import ChaosNet, DelayRelay, can_make_namespaces


@pytest.mark.parametrize("offset", [30, -30])
def test_faketime_moves_the_wall_clock_only(offset: int) -> None:
    code = "import time; print(time.time(), time.monotonic())"
    moved = subprocess.run([*faketime_prefix(offset), sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    true = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=30).stdout.split()
    assert abs(float(moved[0]) - float(true[0]) - offset) < 5
    assert abs(float(moved[1]) - float(true[1])) < 5  # monotonic left true


async def test_lose_key_and_live_leases(redis: aioredis.Redis) -> None:
    outage = "o-00000000c0de"
    await redis.hset(keys.lease_meta(outage), mapping={"p1": "c1|video", "p2": "c1|audio", "p3": "c2|video"})
    await redis.hset(keys.in_use(outage), mapping={"audio": 1, "video": 2})
    assert await live_leases(redis, outage) == {"audio": 1, "video": 2}
    assert await lose_key(redis, outage, keys.in_use)
    assert not await redis.exists(keys.in_use(outage))
    assert not await lose_key(redis, outage, keys.in_use)
    assert await live_leases(redis, outage) == {"audio": 1, "video": 2}


@pytest.mark.skipif(can_make_namespaces() is not None, reason=str(can_make_namespaces()))
def test_a_namespace_is_removed_even_when_the_test_fails() -> None:
    net = ChaosNet()
    with pytest.raises(RuntimeError), net:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert net.name in listed
        raise RuntimeError("the test failed here")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "link"], capture_output=True, text=True, check=True).stdout
    assert net.name not in listed and net.host_if not in links


async def test_the_relay_delays_each_way() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with DelayRelay("127.0.0.1", port) as relay:
            relay.delay_s = 0.2
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            t0 = time.monotonic()
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.read(100), 5) == b"ping"
            assert 0.38 < time.monotonic() - t0 < 1.5
            writer.close()
    finally:
        server.close()
        await server.wait_closed()

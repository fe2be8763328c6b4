"""Network faults between a broker and its Redis, on real packets: the broker runs in a network
namespace of the test (tests.support.netns), Redis on the host end of a veth pair. A partition,
packet loss (nftables in the namespace) and latency (the delay relay: this kernel has no
``sch_netem``). Every answer comes within 2 s (503 ``store_unavailable`` when Redis cannot answer in
time), and the broker recovers by itself once the fault is gone."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from infra.redisproc import RedisServer

from ..support.brokers import BrokerProcess, start_all
from ..support.netns import ChaosNet, DelayRelay, can_make_namespaces
from ..support.workload import Answer, admit, get_status, seed, until_ok

pytestmark = pytest.mark.skipif(can_make_namespaces() is not None, reason=str(can_make_namespaces()))


@pytest.fixture
def net() -> Iterator[ChaosNet]:
    with ChaosNet() as made:
        yield made


@pytest.fixture
def host_redis(net: ChaosNet, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=True, fsync_always=True,
                         extra_args=["--bind", "127.0.0.1", net.host_ip, "--protected-mode", "no"]).start()
    try:
        yield server
    finally:
        server.stop()


def _broker_in(net: ChaosNet, redis_url: str, tmp_path: Path) -> BrokerProcess:
    return start_all([BrokerProcess(redis_url, tmp_path / "broker.log", host=net.ns_ip, prefix=net.prefix())])[0]


async def _burst(s: aiohttp.ClientSession, broker: BrokerProcess, path: str, n: int) -> list[Answer]:
    return list(await asyncio.gather(*(get_status(s, broker.base_url + path, timeout=10) for _ in range(n))))


async def test_partition_answers_503_within_2_s_and_recovers(net: ChaosNet, host_redis: RedisServer,
                                                            tmp_path: Path) -> None:
    broker = _broker_in(net, f"redis://{net.host_ip}:{host_redis.port}/0", tmp_path)
    try:
        target = await seed(broker.base_url)
        path = f"/v1/outages/{target.outage}"
        async with aiohttp.ClientSession() as s:
            assert {a.status for a in await _burst(s, broker, path, 8)} == {200}
            net.partition(host_redis.port)
            cut = await _burst(s, broker, path, 8)
            cut += [await admit(s, broker.base_url, target, "video") for _ in range(3)]
            assert {a.status for a in cut} == {503}, [a.status for a in cut]
            worst = max(a.seconds for a in cut)
            assert worst < 2.0, worst
            net.clear()
            healed = await until_ok(s, broker.base_url + path, within=10)
            assert (await admit(s, broker.base_url, target, "video")).status == 201
        print(f"\npartition: {len(cut)} x 503, slowest {worst:.2f} s; serving {healed:.2f} s after it healed")
    finally:
        broker.stop()


async def test_packet_loss_answers_within_2_s(net: ChaosNet, host_redis: RedisServer, tmp_path: Path) -> None:
    broker = _broker_in(net, f"redis://{net.host_ip}:{host_redis.port}/0", tmp_path)
    try:
        target = await seed(broker.base_url)
        path = f"/v1/outages/{target.outage}"
        async with aiohttp.ClientSession() as s:
            net.loss(host_redis.port, 30)
            answers: list[Answer] = []
            for _ in range(8):
                answers += await _burst(s, broker, path, 5)
            net.clear()
            assert (await until_ok(s, broker.base_url + path, within=10)) < 10
        statuses = Counter(a.status for a in answers)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0
        worst = max(a.seconds for a in answers)
        assert worst < 2.0, worst
        print(f"\n30% loss: {dict(statuses)} of {len(answers)}, slowest {worst:.2f} s")
    finally:
        broker.stop()


async def test_latency_below_and_above_the_command_timeout(net: ChaosNet, host_redis: RedisServer,
                                                           tmp_path: Path) -> None:
    with DelayRelay(net.host_ip, host_redis.port) as relay:
        broker = _broker_in(net, f"redis://{net.host_ip}:{relay.port}/0", tmp_path)
        try:
            target = await seed(broker.base_url)
            path = f"/v1/outages/{target.outage}"
            async with aiohttp.ClientSession() as s:
                relay.delay_s = 0.05  # 100 ms per round trip: slower, still served
                slow = await _burst(s, broker, path, 4)
                assert {a.status for a in slow} == {200}
                relay.delay_s = 0.4  # 800 ms per round trip, above the 0.5 s command timeout
                t0 = time.monotonic()
                late = await _burst(s, broker, path, 4)
                late.append(await admit(s, broker.base_url, target, "audio"))
                assert {a.status for a in late} == {503}, [a.status for a in late]
                worst = max(a.seconds for a in late)
                assert worst < 2.0, worst
                relay.delay_s = 0.0
                healed = await until_ok(s, broker.base_url + path, within=10)
                assert (await admit(s, broker.base_url, target, "audio")).status == 201
            print(f"\nlatency 100 ms RTT: reads in {max(a.seconds for a in slow):.2f} s; 800 ms RTT: 503 within "
                  f"{worst:.2f} s; served {healed:.2f} s after ({time.monotonic() - t0:.1f} s in all)")
        finally:
            broker.stop()

"""The ledger's scripts run unchanged on a real Redis Cluster (three primaries, started here)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from broker.ids import new_conference_id, new_outage_id, new_participant_id
from quotas import keys
from quotas.ledger import PortLedger, RateLimit

pytestmark = pytest.mark.slow


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    import random
    import socket

    while True:
        port = random.randrange(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is missing (Debian package redis-tools, installed with redis-server)")
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        d: Path = tmp_path_factory.mktemp(f"cluster{port}")
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(d / "nodes.conf"), "--dir", str(d), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    try:
        deadline = time.monotonic() + 30
        for port in ports:
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True,
                                 check=False).stdout.strip() != "PONG":
                assert time.monotonic() < deadline, "cluster nodes did not start"
                time.sleep(0.05)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
             "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        while "cluster_state:ok" not in subprocess.run(["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                                                       capture_output=True, text=True, check=False).stdout:
            assert time.monotonic() < deadline + 20, "cluster did not become ok"
            time.sleep(0.1)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.fixture
async def cluster(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0], decode_responses=True)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


async def test_outages_spread_over_slots_and_caps_hold(cluster: RedisCluster) -> None:
    ledger = PortLedger(cluster)  # type: ignore[arg-type]
    outages = [new_outage_id() for _ in range(6)]
    slots = {cluster.keyslot(keys.capacity(o)) for o in outages}
    assert len(slots) > 1  # the outages really live on different slots
    for o in outages:
        assert {cluster.keyslot(k) for k in keys.ledger_keys(o)} == {cluster.keyslot(keys.capacity(o))}
        assert await ledger.open_outage(o, {"id": o}, audio=8, video=10)
        conf = new_conference_id(o)
        assert await ledger.add_conference(o, conf, {"id": conf}, reserve={"audio": 0, "video": 2}) == "ok"
        results = await asyncio.gather(*[
            ledger.admit(o, conf, new_participant_id(o), "video", True, 30_000, {"display_name": "x"},
                         rate=RateLimit(burst=1000, per_s=1000))
            for _ in range(25)
        ])
        granted = [r for r in results if r.status == "granted"]
        assert sum(r.kind == "video" for r in granted) == 10
        assert sum(r.kind == "audio" for r in granted) == 8
        assert (await ledger.usage(o))["in_use"] == {"audio": 8, "video": 10}
        closed = await ledger.close_outage(o, "restored", 10**13)
        assert closed is not None and len(closed[0]) == 18
        assert (await ledger.usage(o))["in_use"] == {"audio": 0, "video": 0}

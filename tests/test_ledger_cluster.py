"""The ledger's scripts run unchanged on a real Redis Cluster (three primaries, started here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from broker.ids import new_conference_id, new_outage_id, new_participant_id
from quotas import keys
from quotas.ledger import PortLedger, RateLimit

from .support.cluster import ClusterSetup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with ClusterSetup(tmp_path_factory.mktemp("cluster"), primaries=3, replicas_each=0) as setup:
        yield setup.ports


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

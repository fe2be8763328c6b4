"""Faults of the ledger's own data and of the brokers' clocks, against real broker processes:

* a key of the outage lost (the in-use counters, the lease set, the lease owners, the participant
  records): the caps stay exact and the next decision or the broker's audit repairs it;
* a broker whose clock is 30 s ahead or behind: leases follow Redis TIME, so it neither reclaims a
  live lease nor grants one already expired.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from infra.redisproc import RedisServer
from quotas import keys

from ..support.brokers import BrokerProcess, faketime_prefix, start_all
from ..support.ledger_probe import live_leases, lose_key
from ..support.workload import admit, seed

LOST = {
    "counters": (keys.in_use, keys.conference_use),
    "lease set": (keys.leases,),
    "lease owners": (keys.lease_meta,),
    "participant records": (keys.participants, keys.participant_states, keys.participant_kinds,
                            keys.participant_conferences),
}


@pytest.mark.parametrize("lost", list(LOST))
async def test_a_lost_key_never_lets_the_caps_pass(own_redis: RedisServer, tmp_path: Path, lost: str) -> None:
    brokers = start_all([BrokerProcess(own_redis.url, tmp_path / f"b{i}.log",
                                       env={"BACKUPPLUS_AUDIT_INTERVAL_S": "1"}) for i in range(2)])
    control = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        target = await seed(brokers[0].base_url)
        async with aiohttp.ClientSession() as s:
            first = await asyncio.gather(*(admit(s, brokers[i % 2].base_url, target, "video") for i in range(10)))
            assert [a.status for a in first] == [201] * 10
            for key in LOST[lost]:
                assert await lose_key(control, target.outage, key)
            # the next decisions, from either broker, still see all ten ports taken
            more = await asyncio.gather(*(admit(s, brokers[i % 2].base_url, target, "video") for i in range(6)))
            assert {a.status for a in more} == {409}, [(a.status, a.body.get("code")) for a in more]
            held = await live_leases(control, target.outage)
            assert held["video"] <= 10
            # within one audit period (1 s here) the ledger is whole again: counters equal the leases
            deadline = time.monotonic() + 5
            while True:
                use = await control.hgetall(keys.in_use(target.outage))
                leases = await control.zcard(keys.leases(target.outage))
                states = await control.hlen(keys.participant_states(target.outage))
                if use.get("video") == "10" and leases == 10 and states >= 10:
                    break
                assert time.monotonic() < deadline, (lost, use, leases, states)
                await asyncio.sleep(0.2)
        text = await _metrics(brokers[1].base_url)
        assert "backupplus_ledger_repairs_total" in text
    finally:
        await control.aclose()
        for b in brokers:
            b.stop()


@pytest.mark.parametrize("skew_s", [30, -30])
async def test_a_skewed_broker_clock_changes_no_lease(own_redis: RedisServer, tmp_path: Path, skew_s: int) -> None:
    """Broker A on time, broker B's clock skew_s off (libfaketime). B sweeps leases every 0.2 s: a lease
    granted through A (13 s) must neither be reclaimed early by B (ahead) nor outlive 15 s (behind)."""
    a = BrokerProcess(own_redis.url, tmp_path / "a.log", env={"BACKUPPLUS_SWEEP_INTERVAL_S": "0.2"})
    b = BrokerProcess(own_redis.url, tmp_path / "b.log", prefix=faketime_prefix(skew_s),
                      env={"BACKUPPLUS_SWEEP_INTERVAL_S": "0.2"})
    brokers = start_all([a, b])
    control = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        target = await seed(a.base_url)
        async with aiohttp.ClientSession() as s:
            granted = await admit(s, a.base_url, target, "audio")
            assert granted.status == 201
            t0 = time.monotonic()
            await asyncio.sleep(3)  # a dozen sweeps by the skewed broker
            assert (await live_leases(control, target.outage))["audio"] == 1, "a live lease was reclaimed"
            late = await admit(s, b.base_url, target, "audio")  # the skewed broker grants a normal lease
            assert late.status == 201
            while (await live_leases(control, target.outage))["audio"] > 0:
                assert time.monotonic() - t0 < 17, "a lease outlived its 13 s (+ one sweep)"
                await asyncio.sleep(0.25)
    finally:
        await control.aclose()
        for broker in brokers:
            broker.stop()


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as r:
        return await r.text()

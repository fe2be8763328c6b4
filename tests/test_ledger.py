"""Unit tests of the port ledger (quotas/): every admission rule, leases, conferences, outages."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from quotas import keys
from quotas.ledger import PortLedger

O = "o-0123456789ab"
C1 = f"{O}.c00000001"
C2 = f"{O}.c00000002"
T0 = 1_700_000_000_000
TTL = 30_000


def pid(n: int) -> str:
    return f"{O}.p{n:08x}"


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> PortLedger:
    lg = PortLedger(redis)
    assert await lg.open_outage(O, {"id": O, "state": "active", "conferences": []}, 8, 10)
    assert await lg.add_conference(O, C1, {"id": C1, "title": "one"}, 0, 0) == "ok"
    return lg


async def fill(lg: PortLedger, kind: str, n: int, start: int = 0, conf: str = C1, downgrade: bool = False,
               now: int = T0) -> list[str]:
    granted = []
    for i in range(start, start + n):
        r = await lg.admit(O, conf, pid(i), kind, downgrade, TTL, {"display_name": f"p{i}"}, now_ms=now)  # type: ignore[arg-type]
        assert r.status == "granted", (i, r)
        granted.append(pid(i))
    return granted


async def check_invariants(redis: aioredis.Redis, lg: PortLedger) -> None:
    use = await lg.usage(O)
    metas = await redis.hgetall(keys.lease_meta(O))
    cuse = await redis.hgetall(keys.conference_use(O))
    leases = await redis.zrange(keys.leases(O), 0, -1)
    assert set(leases) == set(metas)
    for k in ("audio", "video"):
        assert 0 <= use["in_use"][k] <= use["capacity"][k]
        assert use["in_use"][k] == sum(1 for m in metas.values() if m.endswith(f"|{k}"))
        assert use["in_use"][k] == sum(int(v) for f, v in cuse.items() if f.endswith(f":{k}"))


async def test_open_outage_once(redis: aioredis.Redis) -> None:
    lg = PortLedger(redis)
    assert await lg.open_outage(O, {"id": O, "conferences": []}, 8, 10)
    assert not await lg.open_outage(O, {"id": O}, 1, 1)
    assert await lg.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 0, "video": 0}}
    h = await redis.hgetall(keys.outage_doc(O))
    assert h["state"] == "active" and json.loads(h["doc"]) == {"id": O, "conferences": []}


async def test_admit_until_full(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 10)
    r = await ledger.admit(O, C1, pid(99), "video", False, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.capacity, r.in_use, r.lease_expires_ms, r.downgraded) == ("full", "video", 10, 10, 0, False)
    await fill(ledger, "audio", 8, start=10)
    r = await ledger.admit(O, C1, pid(98), "audio", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.capacity, r.in_use) == ("full", "audio", 8, 8)
    assert await ledger.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 8, "video": 10}}
    await check_invariants(redis, ledger)


async def test_granted_result_and_participant_doc(ledger: PortLedger, redis: aioredis.Redis) -> None:
    doc = {"id": pid(1), "display_name": "Zoé / x", "tags": [], "nested": {"state": "x"}, "state": "ignored"}
    r = await ledger.admit(O, C1, pid(1), "video", True, TTL, doc, now_ms=T0)
    assert (r.status, r.kind, r.lease_expires_ms, r.capacity, r.in_use, r.downgraded) == (
        "granted", "video", T0 + TTL, 10, 1, False)
    stored = json.loads(await redis.hget(keys.participants(O), pid(1)))
    assert stored == {"id": pid(1), "display_name": "Zoé / x", "tags": [], "nested": {"state": "x"},
                      "kind": "video", "requested_kind": "video", "lease_expires_at_ms": T0 + TTL,
                      "state": "admitted"}
    assert await redis.hget(keys.lease_meta(O), pid(1)) == f"{C1}|video"
    # renew with a state keeps the rest of the doc intact (no cjson round trip: [] stays [])
    assert await ledger.renew(O, pid(1), TTL, now_ms=T0 + 1000, state="connected") == T0 + 1000 + TTL
    stored = json.loads(await redis.hget(keys.participants(O), pid(1)))
    assert stored["state"] == "connected" and stored["tags"] == [] and stored["lease_expires_at_ms"] == T0 + 1000 + TTL
    assert stored["nested"] == {"state": "x"}
    assert await ledger.release(O, pid(1))
    stored = json.loads(await redis.hget(keys.participants(O), pid(1)))
    assert stored["state"] == "left" and stored["tags"] == []


async def test_downgrade(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 10)
    r = await ledger.admit(O, C1, pid(50), "video", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.downgraded, r.capacity, r.in_use) == ("granted", "audio", True, 8, 1)
    stored = json.loads(await redis.hget(keys.participants(O), pid(50)))
    assert stored["kind"] == "audio" and stored["requested_kind"] == "video"
    # no downgrade asked: refused
    r = await ledger.admit(O, C1, pid(51), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "full" and r.kind == "video"
    # audio requests never "upgrade"
    await fill(ledger, "audio", 7, start=60)
    r = await ledger.admit(O, C1, pid(52), "audio", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind) == ("full", "audio")
    # both full with downgrade: refused, reports the requested kind
    r = await ledger.admit(O, C1, pid(53), "video", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.capacity, r.in_use) == ("full", "video", 10, 10)
    await check_invariants(redis, ledger)


async def test_idempotent_admit(ledger: PortLedger) -> None:
    a = await ledger.admit(O, C1, pid(1), "video", True, TTL, {}, now_ms=T0)
    b = await ledger.admit(O, C1, pid(1), "video", True, TTL, {}, now_ms=T0 + 5)
    assert a == b
    assert (await ledger.usage(O))["in_use"]["video"] == 1
    # a downgraded grant retried is still the same audio lease
    await fill(ledger, "video", 9, start=10)
    c = await ledger.admit(O, C1, pid(2), "video", True, TTL, {}, now_ms=T0)
    d = await ledger.admit(O, C1, pid(2), "video", True, TTL, {}, now_ms=T0)
    assert c == d and c.kind == "audio" and c.downgraded
    assert await ledger.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 1, "video": 10}}


async def test_ended_and_no_conference(ledger: PortLedger) -> None:
    r = await ledger.admit(O, f"{O}.cffffffff", pid(1), "audio", True, TTL, {}, now_ms=T0)
    assert r.status == "no_conference" and r.kind is None
    r = await ledger.admit("o-ffffffffffff", C1, pid(1), "audio", True, TTL, {}, now_ms=T0)
    assert r.status == "ended"
    assert await ledger.close_outage(O, "restored", "2024-01-01T10:00:00+01:00") == []
    r = await ledger.admit(O, C1, pid(1), "audio", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.lease_expires_ms, r.capacity, r.in_use) == ("ended", None, 0, 0, 0)
    assert await ledger.add_conference(O, C2, {}, 0, 0) == "ended"


async def test_reserves(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {"id": C2}, 3, 4) == "ok"
    # C1 (no reserve) can take only cap - unmet(C2)
    await fill(ledger, "video", 6, conf=C1)
    r = await ledger.admit(O, C1, pid(90), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "full" and r.in_use == 6
    await fill(ledger, "audio", 5, start=20, conf=C1)
    r = await ledger.admit(O, C1, pid(91), "video", True, TTL, {}, now_ms=T0)
    assert r.status == "full"
    # C2 can always take its reserve
    await fill(ledger, "video", 4, start=40, conf=C2)
    await fill(ledger, "audio", 3, start=50, conf=C2)
    assert await ledger.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 8, "video": 10}}
    # once C2's reserve is used, a freed port is for anyone
    assert await ledger.release(O, pid(0))
    r = await ledger.admit(O, C2, pid(60), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "granted"
    await check_invariants(redis, ledger)


async def test_reserve_not_eaten_then_released(ledger: PortLedger) -> None:
    assert await ledger.add_conference(O, C2, {}, 0, 10) == "ok"
    r = await ledger.admit(O, C1, pid(1), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "full" and r.in_use == 0
    r = await ledger.admit(O, C1, pid(1), "video", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.downgraded) == ("granted", "audio", True)
    # removing the reserving conference frees its promise
    assert await ledger.remove_conference(O, C2) == []
    r = await ledger.admit(O, C1, pid(2), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "granted"


async def test_reserve_sum_bounded(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {}, 5, 6) == "ok"
    c3 = f"{O}.c00000003"
    assert await ledger.add_conference(O, c3, {}, 4, 0) == "reserve_exceeds_capacity"
    assert await ledger.add_conference(O, c3, {}, 0, 5) == "reserve_exceeds_capacity"
    assert await ledger.add_conference(O, c3, {}, 3, 4) == "ok"
    assert await redis.hexists(keys.conferences(O), c3)
    # re-adding a conference replaces its own reserve (not counted twice)
    assert await ledger.add_conference(O, C2, {}, 5, 6) == "ok"
    assert await ledger.add_conference(O, C2, {}, 6, 6) == "reserve_exceeds_capacity"
    with pytest.raises(ValueError):
        await ledger.add_conference(O, c3, {}, -1, 0)
    assert json.loads(await redis.hget(keys.conferences(O), C1)) == {"id": C1, "title": "one"}


async def test_release_idempotent(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 2)
    assert await ledger.release(O, pid(0))
    assert not await ledger.release(O, pid(0))
    assert not await ledger.release(O, pid(77))
    assert (await ledger.usage(O))["in_use"]["audio"] == 1
    assert await ledger.renew(O, pid(0), TTL, now_ms=T0) is None
    await check_invariants(redis, ledger)


async def test_leave_checks_scope_releases_once_and_publishes(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {"id": C2, "title": "two"}, 0, 0) == "ok"
    # The broker's participant docs name their conference: that is what scopes a leave once the lease is gone.
    r = await ledger.admit(O, C1, pid(0), "video", False, TTL, {"conference": C1, "display_name": "p0"}, now_ms=T0)
    assert r.status == "granted"
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.EVENTS)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    event = {"type": "participant_left", "participant": pid(0)}
    assert await ledger.leave(O, pid(0), C2, event) == ("forbidden", C1)
    assert (await ledger.usage(O))["in_use"]["video"] == 1  # a refused leave changes nothing
    assert await ledger.leave(O, pid(9), None, event) == ("not_found", "")
    assert await ledger.leave(O, pid(0), C1, event) == ("released", C1)
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and json.loads(message["data"]) == event
    assert await ledger.leave(O, pid(0), None, event) == ("already", C1)
    assert await ledger.leave(O, pid(0), C2, event) == ("forbidden", C1)  # scope still checked after leaving
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    assert json.loads(await redis.hget(keys.participants(O), pid(0)))["state"] == "left"
    await pubsub.aclose()
    await check_invariants(redis, ledger)


async def test_expiry_reclaim_and_renew(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 10)
    # renew pid(0) so it survives
    assert await ledger.renew(O, pid(0), TTL, now_ms=T0 + TTL - 1) == T0 + 2 * TTL - 1
    # at T0 + TTL the other nine are expired: the next admit reclaims them
    r = await ledger.admit(O, C1, pid(20), "video", False, TTL, {}, now_ms=T0 + TTL)
    assert r.status == "granted" and r.in_use == 2
    states = {p: json.loads(d)["state"] for p, d in (await redis.hgetall(keys.participants(O))).items()}
    assert states[pid(0)] == "admitted" and states[pid(20)] == "admitted"
    assert all(states[pid(i)] == "expired" for i in range(1, 10))
    # renew after reclaim: None (the caller drops the media)
    assert await ledger.renew(O, pid(3), TTL, now_ms=T0 + TTL) is None
    assert not await ledger.release(O, pid(3))
    await check_invariants(redis, ledger)


async def test_renew_of_expired_lease_reclaims_it(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 1)
    assert await ledger.renew(O, pid(0), TTL, now_ms=T0 + TTL) is None
    assert json.loads(await redis.hget(keys.participants(O), pid(0)))["state"] == "expired"
    assert (await ledger.usage(O))["in_use"]["audio"] == 0


async def test_reclaim_expired_and_sweep(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 3)
    await fill(ledger, "video", 2, start=10, now=T0 + 10_000)
    assert await ledger.reclaim_expired(O, now_ms=T0 + TTL - 1) == []
    # bounded: equal expiries come out in id order
    assert await ledger.reclaim_expired(O, now_ms=T0 + TTL, limit=2) == [pid(0), pid(1)]
    assert (await ledger.usage(O))["in_use"]["audio"] == 1
    await redis.sadd(keys.ACTIVE_OUTAGES, O, "o-ffffffffffff")
    swept = await ledger.sweep(now_ms=T0 + TTL + 10_000)
    assert {k: sorted(v) for k, v in swept.items()} == {O: sorted([pid(2), pid(10), pid(11)])}
    assert await ledger.sweep(now_ms=T0 + TTL + 10_000) == {}
    assert (await ledger.usage(O))["in_use"] == {"audio": 0, "video": 0}
    await check_invariants(redis, ledger)


async def test_remove_conference(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {}, 2, 2) == "ok"
    await fill(ledger, "video", 3, conf=C1)
    await fill(ledger, "video", 2, start=10, conf=C2)
    await fill(ledger, "audio", 1, start=20, conf=C2)
    released = await ledger.remove_conference(O, C2)
    assert sorted(released) == [pid(10), pid(11), pid(20)]
    assert await ledger.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 0, "video": 3}}
    assert not await redis.hexists(keys.conferences(O), C2)
    assert await redis.hgetall(keys.reserves(O)) == {f"{C1}:audio": "0", f"{C1}:video": "0"}
    assert json.loads(await redis.hget(keys.participants(O), pid(10)))["state"] == "left"
    r = await ledger.admit(O, C2, pid(30), "audio", True, TTL, {}, now_ms=T0)
    assert r.status == "no_conference"
    assert await ledger.remove_conference(O, C2) == []
    await check_invariants(redis, ledger)


async def test_close_outage(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 3)
    await fill(ledger, "audio", 1, start=10)
    assert await ledger.release(O, pid(10))
    released = await ledger.close_outage(O, "restored", "2024-05-02T12:00:00+02:00")
    assert released is not None and sorted(released) == [pid(0), pid(1), pid(2)]
    h = await redis.hgetall(keys.outage_doc(O))
    assert h["state"] == "restored"
    doc = json.loads(h["doc"])
    assert doc == {"id": O, "state": "restored", "conferences": [], "ended_at": "2024-05-02T12:00:00+02:00"}
    for key in keys.ledger_keys(O)[:6]:
        assert not await redis.exists(key)
    assert await redis.hexists(keys.conferences(O), C1)  # conferences and participants are kept
    parts = {p: json.loads(d)["state"] for p, d in (await redis.hgetall(keys.participants(O))).items()}
    assert parts == {pid(0): "left", pid(1): "left", pid(2): "left", pid(10): "left"}
    assert await ledger.usage(O) == {"capacity": {"audio": 0, "video": 0}, "in_use": {"audio": 0, "video": 0}}
    assert await ledger.close_outage(O, "expired", "x") is None
    assert await ledger.renew(O, pid(0), TTL, now_ms=T0) is None
    assert not await ledger.release(O, pid(0))
    assert await ledger.reclaim_expired(O, now_ms=T0 + 10 * TTL) == []
    assert await ledger.update_doc(O, {"x": 1}) is None
    assert not await ledger.open_outage(O, {}, 8, 10)


async def test_update_doc(ledger: PortLedger, redis: aioredis.Redis) -> None:
    new = await ledger.update_doc(O, {"window_ends_at": "2024-05-03T18:00:00+02:00"})
    assert new == {"id": O, "state": "active", "conferences": [], "window_ends_at": "2024-05-03T18:00:00+02:00"}
    assert json.loads(await redis.hget(keys.outage_doc(O), "doc")) == new
    assert await ledger.update_doc("o-ffffffffffff", {"a": 1}) is None


async def test_overshoot_breaks_cap_on_purpose(ledger: PortLedger) -> None:
    await fill(ledger, "audio", 8)
    r = await ledger.admit(O, C1, pid(30), "audio", False, TTL, {}, now_ms=T0, overshoot=1)
    assert (r.status, r.capacity, r.in_use) == ("granted", 8, 9)


async def test_noscript_reload(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 1)
    await redis.script_flush()
    r = await ledger.admit(O, C1, pid(1), "audio", False, TTL, {}, now_ms=T0)
    assert r.status == "granted" and r.in_use == 2
    await redis.script_flush()
    assert await ledger.release(O, pid(1))


async def test_admit_reclaims_bounded_then_exact(ledger: PortLedger) -> None:
    # an expired lease of the same participant is never returned as live
    await fill(ledger, "audio", 1)
    r = await ledger.admit(O, C1, pid(0), "audio", False, TTL, {}, now_ms=T0 + TTL)
    assert r.status == "granted" and r.lease_expires_ms == T0 + 2 * TTL and r.in_use == 1


async def test_bytes_client(raw_redis: aioredis.Redis) -> None:
    lg = PortLedger(raw_redis)
    assert await lg.open_outage(O, {"id": O}, 1, 1)
    assert await lg.add_conference(O, C1, {}, 0, 0) == "ok"
    r = await lg.admit(O, C1, pid(1), "video", True, TTL, {"n": 1}, now_ms=T0)
    assert (r.status, r.kind) == ("granted", "video")
    r = await lg.admit(O, C1, pid(2), "video", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind, r.downgraded) == ("granted", "audio", True)
    r = await lg.admit(O, C1, pid(3), "video", True, TTL, {}, now_ms=T0)
    assert (r.status, r.kind) == ("full", "video")
    assert await lg.renew(O, pid(1), TTL, now_ms=T0 + 1, state="connected") == T0 + 1 + TTL
    assert await lg.reclaim_expired(O, now_ms=T0 + TTL) == [pid(2)]
    await raw_redis.sadd(keys.ACTIVE_OUTAGES, O)
    assert await lg.sweep(now_ms=T0 + 2 * TTL) == {O: [pid(1)]}
    assert await lg.usage(O) == {"capacity": {"audio": 1, "video": 1}, "in_use": {"audio": 0, "video": 0}}
    assert await lg.update_doc(O, {"b": 2}) == {"id": O, "b": 2}
    assert await lg.remove_conference(O, C1) == []
    assert await lg.close_outage(O, "expired", "t") == []
    assert await lg.close_outage(O, "expired", "t") is None


async def test_invalid_arguments(ledger: PortLedger) -> None:
    with pytest.raises(ValueError):
        await ledger.admit(O, C1, pid(1), "screen", True, TTL, {}, now_ms=T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.admit(O, C1, pid(1), "audio", True, 0, {}, now_ms=T0)
    with pytest.raises(ValueError):
        await ledger.renew(O, pid(1), TTL, state='bad"state')
    with pytest.raises(ValueError):
        await ledger.open_outage("o-aaaaaaaaaaaa", {}, -1, 1)


async def test_reserves_added_while_ports_in_use(ledger: PortLedger) -> None:
    """Reserves promised after the ports were taken: a reserving conference may use a freed port
    even when the other reserves are not met yet (unmet(C) > 0 wins)."""
    await fill(ledger, "video", 10)
    c3 = f"{O}.c00000003"
    assert await ledger.add_conference(O, C2, {}, 0, 3) == "ok"
    assert await ledger.add_conference(O, c3, {}, 0, 3) == "ok"
    r = await ledger.admit(O, C2, pid(20), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "full"
    assert await ledger.release(O, pid(0)) and await ledger.release(O, pid(1))
    r = await ledger.admit(O, C1, pid(21), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "full"  # C1 has no reserve and the others' are unmet
    r = await ledger.admit(O, C2, pid(22), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "granted" and r.in_use == 9
    r = await ledger.admit(O, c3, pid(23), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "granted" and r.in_use == 10
    r = await ledger.admit(O, c3, pid(24), "video", False, TTL, {}, now_ms=T0)
    assert r.status == "full"

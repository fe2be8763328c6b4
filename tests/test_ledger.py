"""Unit tests of the port ledger (quotas/): every admission rule, preemption, ceilings, rate limits,
leases, history, the lifecycle scripts and the audit trail, on a real redis-server.

The scripts read Redis TIME; a test that needs a lease to have expired moves its expiry into the past
(``expire``), as the passing of time would.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from quotas import keys
from quotas.ledger import KINDS, PortLedger, RateLimit

O = "o-0123456789ab"
C1 = f"{O}.c00000001"
C2 = f"{O}.c00000002"
C3 = f"{O}.c00000003"
TTL = 30_000
FAST = RateLimit(burst=1000, per_s=1000)  # no rate limit in the tests that are not about it


def pid(n: int) -> str:
    return f"{O}.p{n:08x}"


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> PortLedger:
    lg = PortLedger(redis)
    assert await lg.open_outage(O, {"id": O}, 8, 10, contract="K-1", serial="SN1", ticket="BP-1")
    assert await lg.add_conference(O, C1, {"id": C1, "title": "one"}) == "ok"
    return lg


async def admit(lg: PortLedger, conf: str, n: int, kind: str = "video", downgrade: bool = False, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("rate", FAST)
    return await lg.admit(O, conf, pid(n), kind, downgrade, TTL, {"display_name": f"p{n}"},  # type: ignore[arg-type]
                          display_name=f"p{n}", **kw)


async def fill(lg: PortLedger, kind: str, n: int, start: int = 0, conf: str = C1) -> list[str]:
    for i in range(start, start + n):
        r = await admit(lg, conf, i, kind)
        assert r.status == "granted" and r.kind == kind, (i, r)
    return [pid(i) for i in range(start, start + n)]


async def expire(redis: aioredis.Redis, *pids: str) -> None:
    """As if the leases' time had passed: their expiry moves into the past."""
    for p in pids:
        assert await redis.zadd(keys.leases(O), {p: 1}, xx=True, ch=True) == 1


async def check_invariants(redis: aioredis.Redis, lg: PortLedger) -> None:
    """The three lease structures agree, the caches equal what the leases hold, no cap is passed."""
    use = await lg.usage(O)
    metas = await redis.hgetall(keys.lease_meta(O))
    assert set(await redis.zrange(keys.leases(O), 0, -1)) == set(metas)
    assert set(await redis.zrange(keys.lease_order(O), 0, -1)) == set(metas)
    cuse = await redis.hgetall(keys.conference_use(O))
    for k in KINDS:
        held = sum(1 for m in metas.values() if m.endswith(f"|{k}"))
        assert use["in_use"][k] == held <= use["capacity"][k]
        assert held == sum(int(v) for f, v in cuse.items() if f.endswith(f":{k}"))
    states = await redis.hmget(keys.participant_states(O), list(metas))
    assert all(s in ("admitted", "connected") for s in states)


# --- admission --------------------------------------------------------------------------------------
async def test_open_outage_once(redis: aioredis.Redis) -> None:
    lg = PortLedger(redis)
    assert await lg.open_outage(O, {"id": O}, 8, 10)
    assert not await lg.open_outage(O, {"id": O}, 1, 1)
    assert await lg.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 0, "video": 0}}
    fields = await lg.outage_fields(O)
    assert fields["state"] == "active" and json.loads(fields["doc"]) == {"id": O}
    assert (fields["cap_audio"], fields["cap_video"], fields["window_ends_at"]) == ("8", "10", "")
    assert [e["type"] for e in await lg.audit_events(O)] == ["declared"]


async def test_admit_until_full_and_the_participant_record(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 10)
    r = await admit(ledger, C1, 99)
    assert (r.status, r.kind, r.capacity, r.in_use, r.lease_expires_ms, r.reason) == ("full", "video", 10, 10, 0, "full")
    p = await ledger.participant(O, pid(3))
    assert p is not None and (p.state, p.kind, p.conference, p.doc) == ("admitted", "video", C1, {"display_name": "p3"})
    now_ms = int((await redis.time())[0]) * 1000
    assert p.lease_expires_ms is not None and abs(p.lease_expires_ms - (now_ms + TTL)) < 2_000
    assert await ledger.participant(O, pid(99)) is None  # a refusal leaves no record
    await check_invariants(redis, ledger)


async def test_the_doc_stays_opaque(ledger: PortLedger) -> None:
    doc = {"display_name": 'Zoé "x" | y', "tags": [], "nested": {"state": "x"}, "big": 2**62}
    r = await ledger.admit(O, C1, pid(1), "video", True, TTL, doc, rate=FAST)
    assert r.status == "granted"
    assert (await ledger.renew(O, pid(1), TTL, state="connected")).status == "renewed"
    p = await ledger.participant(O, pid(1))
    assert p is not None and p.doc == doc and p.state == "connected"


async def test_downgrade(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 10)
    r = await admit(ledger, C1, 50, "video", downgrade=True)
    assert (r.status, r.kind, r.downgraded, r.capacity, r.in_use) == ("granted", "audio", True, 8, 1)
    assert (await admit(ledger, C1, 51, "video")).status == "full"
    await fill(ledger, "audio", 7, start=60)
    assert (await admit(ledger, C1, 52, "audio", downgrade=True)).status == "full"
    r = await admit(ledger, C1, 53, "video", downgrade=True)
    assert (r.status, r.kind, r.capacity, r.in_use) == ("full", "video", 10, 10)
    await check_invariants(redis, ledger)


async def test_a_retry_with_the_same_participant_is_the_same_lease(ledger: PortLedger) -> None:
    a = await admit(ledger, C1, 1)
    b = await admit(ledger, C1, 1)
    assert (a.status, a.kind, a.participant_id) == (b.status, b.kind, b.participant_id)
    assert (await ledger.usage(O))["in_use"]["video"] == 1


async def test_idempotency_key(ledger: PortLedger) -> None:
    first = await admit(ledger, C1, 1, idempotency=("key-1", "fp"))
    again = await admit(ledger, C1, 2, idempotency=("key-1", "fp"))  # a new id: the retry of a lost answer
    assert first.status == again.status == "granted"
    assert again.participant_id == pid(1) and again.lease_expires_ms == first.lease_expires_ms
    assert (await ledger.usage(O))["in_use"]["video"] == 1
    assert (await admit(ledger, C1, 3, idempotency=("key-1", "other body"))).status == "idempotency_mismatch"
    # once the first participant has left, the key admits anew
    assert await ledger.release(O, pid(1))
    r = await admit(ledger, C1, 4, idempotency=("key-1", "fp"))
    assert r.status == "granted" and r.participant_id == pid(4)


async def test_ended_and_no_conference(ledger: PortLedger) -> None:
    r = await admit(ledger, f"{O}.cffffffff", 1)
    assert r.status == "no_conference" and r.kind is None
    assert (await ledger.close_outage(O, "restored", 0)) == ([], "missed")
    r = await admit(ledger, C1, 1)
    assert (r.status, r.kind, r.lease_expires_ms, r.capacity, r.in_use) == ("ended", None, 0, 0, 0)
    assert await ledger.add_conference(O, C2, {}) == "ended"


# --- reserves ----------------------------------------------------------------------------------------
async def test_reserves(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {"id": C2}, reserve={"audio": 3, "video": 4}) == "ok"
    await fill(ledger, "video", 6, conf=C1)
    r = await admit(ledger, C1, 90)
    assert r.status == "full" and r.in_use == 6
    await fill(ledger, "audio", 5, start=20, conf=C1)
    assert (await admit(ledger, C1, 91, downgrade=True)).status == "full"
    await fill(ledger, "video", 4, start=40, conf=C2)
    await fill(ledger, "audio", 3, start=50, conf=C2)
    assert await ledger.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 8, "video": 10}}
    assert await ledger.release(O, pid(0))
    assert (await admit(ledger, C2, 60)).status == "granted"  # once C2's reserve is met, a freed port is anyone's
    await check_invariants(redis, ledger)


async def test_reserve_sum_bounded(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {}, reserve={"audio": 5, "video": 6}) == "ok"
    assert await ledger.add_conference(O, C3, {}, reserve={"audio": 4, "video": 0}) == "reserve_exceeds_capacity"
    assert await ledger.add_conference(O, C3, {}, reserve={"audio": 3, "video": 4}) == "ok"
    assert await ledger.add_conference(O, C2, {}, reserve={"audio": 6, "video": 6}) == "reserve_exceeds_capacity"
    with pytest.raises(ValueError):
        await ledger.add_conference(O, C3, {}, reserve={"audio": -1, "video": 0})
    assert json.loads(await redis.hget(keys.conferences(O), C1)) == {"id": C1, "title": "one"}


async def test_reserves_added_while_ports_in_use(ledger: PortLedger) -> None:
    """Reserves promised after the ports were taken: a reserving conference may use a freed port even
    when the other reserves are not met yet (unmet(C) > 0 wins); nobody is evicted for them."""
    await fill(ledger, "video", 10)
    assert await ledger.add_conference(O, C2, {}, priority=5, reserve={"audio": 0, "video": 3}) == "ok"
    assert await ledger.add_conference(O, C3, {}, priority=5, reserve={"audio": 0, "video": 3}) == "ok"
    assert (await admit(ledger, C2, 20)).status == "full"  # equal importance: nobody preempted
    assert await ledger.release(O, pid(0)) and await ledger.release(O, pid(1))
    assert (await admit(ledger, C1, 21)).status == "full"
    assert (await admit(ledger, C2, 22)).status == "granted"
    assert (await admit(ledger, C3, 23)).status == "granted"
    assert (await admit(ledger, C3, 24)).status == "full"


# --- importance ----------------------------------------------------------------------------------------
async def test_a_more_important_conference_preempts_the_least_important_latest(
    ledger: PortLedger, redis: aioredis.Redis
) -> None:
    assert await ledger.add_conference(O, C2, {}, priority=3) == "ok"
    assert await ledger.add_conference(O, C3, {}, priority=1) == "ok"
    await fill(ledger, "video", 4, start=0, conf=C2)   # priority 3
    await fill(ledger, "video", 6, start=10, conf=C1)  # priority 5: the least important
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.EVENTS)
    await pubsub.get_message(timeout=1)
    r = await admit(ledger, C3, 30)
    assert (r.status, r.kind, r.preempted, r.preempted_conference) == ("granted", "video", pid(15), C1)
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and json.loads(message["data"]) == {
        "type": "participant_preempted", "outage": O, "participant": pid(15), "conference": C1}
    await pubsub.aclose()
    victim = await ledger.participant(O, pid(15))
    assert victim is not None and victim.state == "preempted" and victim.lease_expires_ms is None
    # the next ones take the priority-5 conference's latest first, then priority 3's
    taken = [(await admit(ledger, C3, 31 + i)).preempted for i in range(7)]
    assert taken == [pid(14), pid(13), pid(12), pid(11), pid(10), pid(3), pid(2)]
    assert await ledger.conference_use(O) == {C2: {"audio": 0, "video": 2}, C3: {"audio": 0, "video": 8}}
    types = [e["type"] for e in await ledger.audit_events(O, limit=1000)]
    assert types.count("preempted") == 8
    await check_invariants(redis, ledger)


async def test_equal_or_more_important_is_never_touched(ledger: PortLedger) -> None:
    assert await ledger.add_conference(O, C2, {}, priority=1) == "ok"
    await fill(ledger, "video", 10, conf=C2)
    r = await admit(ledger, C1, 20)  # priority 5 against 1
    assert (r.status, r.preempted) == ("full", None)
    assert await ledger.add_conference(O, C3, {}, priority=1) == "ok"
    assert (await admit(ledger, C3, 21)).status == "full"  # equal importance


async def test_reserves_stay_guaranteed_under_preemption(ledger: PortLedger) -> None:
    assert await ledger.add_conference(O, C2, {}, priority=7, reserve={"audio": 0, "video": 3}) == "ok"
    assert await ledger.add_conference(O, C3, {}, priority=1) == "ok"
    await fill(ledger, "video", 5, conf=C2)
    await fill(ledger, "video", 5, start=10, conf=C1)
    preempted = [(await admit(ledger, C3, 20 + i)).preempted for i in range(8)]
    # C2 (priority 7) gives its two ports above its reserve, then C1 (priority 5) all five
    assert preempted == [pid(4), pid(3), pid(14), pid(13), pid(12), pid(11), pid(10), None]
    assert (await ledger.conference_use(O))[C2]["video"] == 3


async def test_downgrade_before_preemption_and_audio_preemption(ledger: PortLedger) -> None:
    assert await ledger.add_conference(O, C3, {}, priority=1) == "ok"
    await fill(ledger, "video", 10, conf=C1)
    r = await admit(ledger, C3, 20, downgrade=True)
    assert (r.kind, r.downgraded, r.preempted) == ("audio", True, None)  # a free audio port first
    r = await admit(ledger, C3, 21)
    assert (r.kind, r.preempted) == ("video", pid(9))  # no downgrade asked: preempts video
    await fill(ledger, "audio", 7, start=30, conf=C1)
    r = await admit(ledger, C3, 22, "audio")
    assert (r.kind, r.preempted) == ("audio", pid(36))


async def test_ceilings(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {}, ceiling={"audio": 1, "video": 2}) == "ok"
    await fill(ledger, "video", 2, conf=C2)
    r = await admit(ledger, C2, 10)
    assert (r.status, r.reason, r.capacity, r.in_use) == ("full", "conference_max", 2, 2)
    r = await admit(ledger, C2, 11, downgrade=True)
    assert (r.status, r.kind, r.downgraded) == ("granted", "audio", True)
    assert (await admit(ledger, C2, 12, downgrade=True)).reason == "conference_max"
    await check_invariants(redis, ledger)


async def test_update_conference_is_atomic_and_never_evicts(ledger: PortLedger) -> None:
    await fill(ledger, "video", 4)
    change = await ledger.update_conference(O, C1, priority=2, ceiling={"video": 2})
    assert (change.status, change.priority, change.ceiling) == ("ok", 2, {"audio": None, "video": 2})
    assert (await ledger.usage(O))["in_use"]["video"] == 4  # lowering the ceiling evicts nobody
    assert (await admit(ledger, C1, 10)).reason == "conference_max"
    assert (await ledger.update_conference(O, C1, reserve={"video": 3})).status == "max_below_reserve"
    assert (await ledger.update_conference(O, C1, reserve={"video": 11})).status == "reserve_exceeds_capacity"
    assert (await ledger.update_conference(O, C1, ceiling={"video": None}, reserve={"video": 3})).status == "ok"
    assert await ledger.conference_settings(O, [C1]) == {
        C1: {"priority": 2, "reserve": {"audio": 0, "video": 3}, "max": {"audio": None, "video": None}}}
    assert (await ledger.update_conference(O, C2, priority=1)).status == "no_conference"
    assert (await admit(ledger, C1, 11)).status == "granted"


# --- rate limit ----------------------------------------------------------------------------------------
async def test_one_link_cannot_admit_faster_than_a_meeting(ledger: PortLedger) -> None:
    assert await ledger.add_conference(O, C2, {}) == "ok"
    rate = RateLimit(burst=3, per_s=5)
    results = [await admit(ledger, C1, i, "audio", rate=rate) for i in range(5)]
    assert [r.status for r in results] == ["granted"] * 3 + ["rate_limited"] * 2
    assert 0 < results[3].retry_after_ms <= 200
    assert (await admit(ledger, C2, 10, "audio", rate=rate)).status == "granted"  # per conference
    await asyncio.sleep(0.25)
    assert (await admit(ledger, C1, 20, "audio", rate=rate)).status == "granted"
    assert (await admit(ledger, C1, 21, "audio", rate=rate)).status == "rate_limited"
    refused = [e for e in await ledger.audit_events(O, limit=100) if e["type"] == "refused"]
    assert {e["code"] for e in refused} == {"rate_limited"} and len(refused) == 3


# --- leases --------------------------------------------------------------------------------------------
async def test_expiry_reclaim_and_renew(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 10)
    assert (await ledger.renew(O, pid(0), TTL, state="connected")).status == "renewed"
    await expire(redis, *[pid(i) for i in range(1, 10)])
    r = await admit(ledger, C1, 20)
    assert r.status == "granted" and r.in_use == 2
    for i in range(1, 10):
        p = await ledger.participant(O, pid(i))
        assert p is not None and (p.state, p.state_reason) == ("left", "lease_expired")
    renewed = await ledger.renew(O, pid(3), TTL)
    assert (renewed.status, renewed.reason) == ("gone", "left/lease_expired")
    # a decision that ended it stands even when readmission is allowed
    assert (await ledger.renew(O, pid(3), TTL, conference=C1, kind="video", readmit=True)).status == "gone"
    await check_invariants(redis, ledger)


async def test_a_real_lease_runs_out(ledger: PortLedger, redis: aioredis.Redis) -> None:
    r = await ledger.admit(O, C1, pid(1), "audio", False, 300, {}, rate=FAST)
    assert r.status == "granted"
    await asyncio.sleep(0.4)
    assert await ledger.reclaim_expired(O) == [pid(1)]
    assert (await ledger.usage(O))["in_use"]["audio"] == 0


async def test_sweep(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 3)
    await expire(redis, pid(0), pid(1))
    await redis.sadd(keys.ACTIVE_OUTAGES, O, "o-ffffffffffff")
    assert {k: sorted(v) for k, v in (await ledger.sweep()).items()} == {O: [pid(0), pid(1)]}
    assert await ledger.sweep() == {}
    assert [e["type"] for e in await ledger.audit_events(O, limit=100)].count("lease_expired") == 2


async def test_release_and_leave(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 2)
    assert await ledger.release(O, pid(0), "left/media_failed")
    assert not await ledger.release(O, pid(0))
    assert not await ledger.release(O, pid(77))
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.EVENTS)
    await pubsub.get_message(timeout=1)
    event = {"type": "participant_left", "participant": pid(1)}
    assert await ledger.leave(O, pid(9), event) == ("not_found", "")
    assert await ledger.leave(O, pid(1), event) == ("released", C1)
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and json.loads(message["data"]) == event
    assert await ledger.leave(O, pid(1), event) == ("already", C1)
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    await pubsub.aclose()
    assert (await ledger.participant(O, pid(0))).state_reason == "media_failed"  # type: ignore[union-attr]
    assert (await ledger.usage(O))["in_use"]["audio"] == 0


async def test_history_is_bounded(ledger: PortLedger, redis: aioredis.Redis) -> None:
    for i in range(260):
        assert (await admit(ledger, C1, i, "audio")).status == "granted"
        assert await ledger.release(O, pid(i))
    assert await redis.zcard(keys.history(O)) == 200
    for key in (keys.participants(O), keys.participant_states(O), keys.participant_kinds(O),
                keys.participant_conferences(O)):
        assert await redis.hlen(key) == 200
    assert await ledger.participant(O, pid(0)) is None  # the oldest are gone
    assert (await ledger.participant(O, pid(259))).state == "left"  # type: ignore[union-attr]


async def test_remove_conference(ledger: PortLedger, redis: aioredis.Redis) -> None:
    assert await ledger.add_conference(O, C2, {}, reserve={"audio": 2, "video": 2}, ceiling={"audio": 4, "video": 4}) == "ok"
    await fill(ledger, "video", 3, conf=C1)
    await fill(ledger, "video", 2, start=10, conf=C2)
    await fill(ledger, "audio", 1, start=20, conf=C2)
    assert sorted(await ledger.remove_conference(O, C2)) == [pid(10), pid(11), pid(20)]
    assert await ledger.usage(O) == {"capacity": {"audio": 8, "video": 10}, "in_use": {"audio": 0, "video": 3}}
    assert not await redis.hexists(keys.conferences(O), C2)
    assert await redis.hgetall(keys.reserves(O)) == {f"{C1}:audio": "0", f"{C1}:video": "0"}
    assert await redis.hgetall(keys.ceilings(O)) == {}
    p = await ledger.participant(O, pid(10))
    assert p is not None and (p.state, p.state_reason) == ("ended", "conference_closed")
    assert (await admit(ledger, C2, 30, "audio")).status == "no_conference"
    await check_invariants(redis, ledger)


# --- the outage's lifecycle ------------------------------------------------------------------------------
async def test_close_outage_keeps_only_its_summary(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 3)
    await fill(ledger, "audio", 1, start=10)
    assert await ledger.release(O, pid(10))
    result = await ledger.close_outage(O, "restored", 10**13, by="hotline")
    assert result is not None and sorted(result[0]) == [pid(0), pid(1), pid(2)] and result[1] == "met"
    fields = await ledger.outage_fields(O)
    assert (fields["state"], fields["end_reason"], fields["admitted"]) == ("restored", "restored", "4")
    left = set(await redis.keys(f"bp:{{{O}}}:*"))
    assert left == {keys.outage_doc(O), keys.conferences(O), keys.audit(O)}
    assert 0 < await redis.pttl(keys.audit(O)) <= 30 * 86_400_000
    assert await ledger.close_outage(O, "restored", 0) is None
    assert (await ledger.renew(O, pid(0), TTL)).status == "gone"
    assert not await ledger.release(O, pid(0))
    assert not await ledger.set_planned_end(O, "2030-01-01T12:00:00+01:00")
    assert not await ledger.open_outage(O, {}, 8, 10)


async def test_acknowledgement_counts_once(ledger: PortLedger) -> None:
    status, at, counted = await ledger.acknowledge(O, "Alice", 10**13)
    assert (status, counted) == ("acknowledged", "met") and at > 0
    assert await ledger.acknowledge(O, "Bob", 10**13) == ("already", at, "")
    assert (await ledger.outage_fields(O))["acknowledged_by"] == "Alice"
    assert await ledger.sla_overdue(O, 0, 10**13) == ("", "")  # acknowledged: the ack deadline was met


async def test_overdue_deadlines_counted_once(ledger: PortLedger) -> None:
    assert await ledger.sla_overdue(O, 10**13, 10**13) == ("", "")
    assert await ledger.sla_overdue(O, 0, 0) == ("missed", "missed")
    assert await ledger.sla_overdue(O, 0, 0) == ("", "")
    assert (await ledger.acknowledge(O, "late", 0))[2] == ""  # already counted as missed
    assert (await ledger.close_outage(O, "restored", 0)) == ([], "")


async def test_planned_end(ledger: PortLedger) -> None:
    assert await ledger.set_planned_end(O, "2030-01-01T12:00:00+01:00", "hotline")
    assert (await ledger.outage_fields(O))["window_ends_at"] == "2030-01-01T12:00:00+01:00"
    assert await ledger.set_planned_end(O, None)
    assert (await ledger.outage_fields(O))["window_ends_at"] == ""


# --- a ledger that cannot drift ---------------------------------------------------------------------------
@pytest.mark.parametrize("lost", ["use", "cuse", "leases", "lmeta", "lorder", "records", "cap"])
async def test_a_lost_key_is_repaired_never_above_the_cap(ledger: PortLedger, redis: aioredis.Redis, lost: str) -> None:
    await fill(ledger, "video", 10)
    await fill(ledger, "audio", 3, start=20)
    lost_keys = {
        "use": [keys.in_use(O)], "cuse": [keys.conference_use(O)], "leases": [keys.leases(O)],
        "lmeta": [keys.lease_meta(O)], "lorder": [keys.lease_order(O)], "cap": [keys.capacity(O)],
        "records": [keys.participants(O), keys.participant_states(O)],
    }[lost]
    await redis.delete(*lost_keys)
    assert (await admit(ledger, C1, 50)).status == "full"  # the decision repairs what it needs first
    await ledger.repair(O)
    assert (await ledger.repair(O))[0] == 0  # one audit made it whole
    await check_invariants(redis, ledger)
    assert (await ledger.usage(O))["in_use"] == {"audio": 3, "video": 10}
    assert (await ledger.renew(O, pid(0), TTL, state="connected")).status == "renewed"


async def test_the_media_node_readmits_a_lease_the_ledger_lost(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "video", 9)
    for key in keys.ledger_keys(O)[8:15]:  # every trace of the participants (a failover that lost writes)
        await redis.delete(key)
    r = await ledger.renew(O, pid(3), TTL, state="connected", conference=C1, kind="video", readmit=True)
    assert r.status == "readmitted"
    assert (await ledger.participant(O, pid(3))).state == "connected"  # type: ignore[union-attr]
    await fill(ledger, "video", 9, start=10)
    r = await ledger.renew(O, pid(4), TTL, state="connected", conference=C1, kind="video", readmit=True)
    assert (r.status, r.reason) == ("gone", "no_capacity")
    assert (await ledger.participant(O, pid(4))).state == "ended"  # type: ignore[union-attr]
    await check_invariants(redis, ledger)


# --- plumbing --------------------------------------------------------------------------------------------
async def test_noscript_reload(ledger: PortLedger, redis: aioredis.Redis) -> None:
    await fill(ledger, "audio", 1)
    await redis.script_flush()
    r = await admit(ledger, C1, 1, "audio")
    assert r.status == "granted" and r.in_use == 2
    await redis.script_flush()
    assert await ledger.release(O, pid(1))


async def test_bytes_client(raw_redis: aioredis.Redis) -> None:
    lg = PortLedger(raw_redis)
    assert await lg.open_outage(O, {"id": O}, 1, 1)
    assert await lg.add_conference(O, C1, {}) == "ok"
    assert await lg.add_conference(O, C2, {}, priority=1) == "ok"
    r = await lg.admit(O, C1, pid(1), "video", True, TTL, {"n": 1}, rate=FAST)
    assert (r.status, r.kind) == ("granted", "video")
    r = await lg.admit(O, C2, pid(2), "video", False, TTL, {}, rate=FAST)
    assert (r.status, r.preempted) == ("granted", pid(1))
    assert (await lg.renew(O, pid(2), TTL, state="connected")).status == "renewed"
    assert [p.id for p in await lg.live_participants(O)] == [pid(2)]
    assert (await lg.participant(O, pid(1))).state == "preempted"  # type: ignore[union-attr]
    assert (await lg.update_conference(O, C1, priority=2)).priority == 2
    assert await lg.audit_events(O, limit=2)
    assert await lg.remove_conference(O, C1) == []
    assert (await lg.close_outage(O, "restored", 10**13)) == ([pid(2)], "met")


async def test_invalid_arguments(ledger: PortLedger) -> None:
    with pytest.raises(ValueError):
        await ledger.admit(O, C1, pid(1), "screen", True, TTL, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.admit(O, C1, pid(1), "audio", True, 0, {})
    with pytest.raises(ValueError):
        await ledger.admit(O, C1, pid(1), "audio", True, TTL, {}, rate=RateLimit(0, 1))
    with pytest.raises(ValueError):
        await ledger.renew(O, pid(1), TTL, state='bad"state')
    with pytest.raises(ValueError):
        await ledger.open_outage("o-aaaaaaaaaaaa", {}, -1, 1)


async def test_memory_stays_bounded_over_thousands_of_cycles(ledger: PortLedger, redis: aioredis.Redis) -> None:
    """5,000 join/leave cycles: the outage's keys stop growing once the history is full."""

    async def outage_bytes() -> int:
        total = 0
        for key in await redis.keys(f"bp:{{{O}}}:*"):
            if key != keys.audit(O):  # the audit trail is bounded by its own MAXLEN (checked below)
                total += await redis.memory_usage(key, samples=0) or 0  # exact, not sampled
        return total

    sizes = {}
    for i in range(5000):
        assert (await admit(ledger, C1, i, "audio")).status == "granted"
        assert await ledger.release(O, pid(i))
        if i + 1 in (2000, 5000):  # (from 1000 on the display names are a byte longer)
            sizes[i + 1] = await outage_bytes()
    assert sizes[5000] <= sizes[2000] * 1.02, sizes
    assert await redis.hlen(keys.participants(O)) == 200
    assert await redis.xlen(keys.audit(O)) <= 20_000 + 200  # ~ MAXLEN trims in whole nodes

"""Race test: 4 OS processes hammer one outage's ledger at once; the caps and reserves hold exactly, and
with conferences of mixed importance every decision (replayed from the audit trail through the
model of tests/test_ledger_statemachine.py) is the one the rules allow: never a preemption of an
equal or more important conference, never a refusal while a port was free or preemptible."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.pool import Pool

import pytest
import redis.asyncio as aioredis

from infra.redisproc import RedisServer
from quotas import keys
from quotas.ledger import PortLedger, RateLimit

from .test_ledger_statemachine import Conf, Model

PROCS = 4
PER_PROC = 100  # 400 concurrent admissions per round
ROUNDS = 5
TTL = 600_000
FAST = RateLimit(burst=100_000, per_s=100_000)

# (pid, conference, status, kind, in_use, capacity, preempted)
Row = tuple[str, str, str, str | None, int, int, str | None]


async def _flood(url: str, outage: str, confs: list[str], proc: int, rnd: int, start_at: float,
                 churn: bool) -> list[Row]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    ledger = PortLedger(client)
    rng = random.Random(proc * 7919 + rnd)
    try:
        await ledger.load_scripts()  # connect and SCRIPT LOAD before the start line
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def one(i: int) -> Row:
            conf = confs[i % len(confs)]
            kind = "video" if rng.random() < 0.6 else "audio"
            pid = f"{outage}.p{proc:02x}{rnd:02x}{i:04x}"
            r = await ledger.admit(outage, conf, pid, kind, rng.random() < 0.5, TTL, {"i": i},  # type: ignore[arg-type]
                                   rate=FAST)
            if churn and r.status == "granted" and i % 2 == 0:
                assert await ledger.release(outage, pid) in (True, False)  # False: preempted meanwhile
                assert not await ledger.release(outage, pid)
                r = await ledger.admit(outage, conf, pid, kind, True, TTL, {"i": i}, rate=FAST)  # type: ignore[arg-type]
            return pid, conf, r.status, r.kind, r.in_use, r.capacity, r.preempted

        return list(await asyncio.gather(*(one(i) for i in range(PER_PROC))))
    finally:
        await client.aclose()


def _worker(args: tuple[str, str, list[str], int, int, float, bool]) -> list[Row]:
    return asyncio.run(_flood(*args))


def _noop(_: int) -> int:
    return 0


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    p = multiprocessing.get_context("spawn").Pool(PROCS)
    try:
        p.map(_noop, range(PROCS))  # pay the spawn cost before any round
        yield p
    finally:
        p.close()
        p.join()


def _round(pool: Pool, url: str, outage: str, confs: list[str], rnd: int, churn: bool = False) -> list[Row]:
    start_at = time.time() + 0.3
    chunks = pool.map(_worker, [(url, outage, confs, i, rnd, start_at, churn) for i in range(PROCS)])
    rows = [row for chunk in chunks for row in chunk]
    assert len(rows) == PROCS * PER_PROC
    for _pid, _conf, status, kind, in_use, capacity, _preempted in rows:
        assert status in ("granted", "full")
        assert kind in ("audio", "video")
        assert 0 <= in_use <= capacity
    return rows


async def _check_ledger(redis: aioredis.Redis, outage: str, audio: int, video: int) -> dict[str, str]:
    use = await redis.hgetall(keys.in_use(outage))
    lmeta = await redis.hgetall(keys.lease_meta(outage))
    cuse = await redis.hgetall(keys.conference_use(outage))
    assert await redis.zcard(keys.leases(outage)) == len(lmeta)
    assert {k: int(v) for k, v in use.items()} == {"audio": audio, "video": video}
    for k, n in (("audio", audio), ("video", video)):
        assert sum(1 for m in lmeta.values() if m.endswith(f"|{k}")) == n
        assert sum(int(v) for f, v in cuse.items() if f.endswith(f":{k}")) == n
    return lmeta


async def test_caps_hold_across_processes(pool: Pool, redis_server: RedisServer, redis: aioredis.Redis) -> None:
    outage = "o-00000000face"
    conf = f"{outage}.c00000001"
    ledger = PortLedger(redis)
    assert await ledger.open_outage(outage, {"id": outage}, 8, 10)
    assert await ledger.add_conference(outage, conf, {}) == "ok"
    for rnd in range(ROUNDS):
        # free every port (concurrently), then 400 admissions from 4 processes at once
        lmeta = await redis.hgetall(keys.lease_meta(outage))
        released = await asyncio.gather(*(ledger.release(outage, p) for p in lmeta))
        assert all(released)
        rows = _round(pool, redis_server.url, outage, [conf], rnd)
        granted = Counter(kind for _p, _c, status, kind, _u, _cap, _v in rows if status == "granted")
        assert granted == {"audio": 8, "video": 10}, (rnd, granted)
        lmeta = await _check_ledger(redis, outage, 8, 10)
        assert set(lmeta) == {p for p, _c, s, _k, _u, _cap, _v in rows if s == "granted"}

    # churn: half the winners release and re-admit while everyone else still floods
    lmeta = await redis.hgetall(keys.lease_meta(outage))
    assert all(await asyncio.gather(*(ledger.release(outage, p) for p in lmeta)))
    rows = _round(pool, redis_server.url, outage, [conf], ROUNDS, churn=True)
    use = await ledger.usage(outage)
    assert use["in_use"]["audio"] <= 8 and use["in_use"]["video"] <= 10
    lmeta = await _check_ledger(redis, outage, use["in_use"]["audio"], use["in_use"]["video"])
    assert set(lmeta) == {p for p, _c, s, _k, _u, _cap, _v in rows if s == "granted"}


async def test_reserves_hold_across_processes(pool: Pool, redis_server: RedisServer,
                                              redis: aioredis.Redis) -> None:
    outage = "o-00000000beef"
    a, b, c = (f"{outage}.c0000000{i}" for i in (1, 2, 3))
    ledger = PortLedger(redis)
    assert await ledger.open_outage(outage, {"id": outage}, 8, 10)
    assert await ledger.add_conference(outage, a, {}, reserve={"audio": 3, "video": 4}) == "ok"
    assert await ledger.add_conference(outage, b, {}, reserve={"audio": 2, "video": 3}) == "ok"
    assert await ledger.add_conference(outage, c, {}) == "ok"
    rows = _round(pool, redis_server.url, outage, [a, b, c], 0)
    granted = Counter((conf, kind) for _p, conf, status, kind, _u, _cap, _v in rows if status == "granted")
    assert sum(n for (_c, k), n in granted.items() if k == "audio") == 8
    assert sum(n for (_c, k), n in granted.items() if k == "video") == 10
    assert granted[(a, "audio")] >= 3 and granted[(a, "video")] >= 4
    assert granted[(b, "audio")] >= 2 and granted[(b, "video")] >= 3
    lmeta = await _check_ledger(redis, outage, 8, 10)
    cuse = await redis.hgetall(keys.conference_use(outage))
    assert {f: int(v) for f, v in cuse.items()} == {f"{cf}:{k}": n for (cf, k), n in granted.items()}
    assert len(lmeta) == 18


def _replay(events: list[dict[str, str]], confs: dict[str, Conf], cap: dict[str, int]) -> int:
    """Replays the audit trail through the model; every decision must be the one the rules allow.
    Returns how many preemptions it saw."""
    model = Model(cap=cap, confs=confs)
    preemptions = 0
    for e in events:
        kind, conf = e.get("kind", ""), e.get("conference", "")
        if e["type"] in ("admitted", "downgraded"):
            victim = e.get("preempted")
            if victim is None:
                assert model.under_ceiling(conf, kind) and model.free_port(conf, kind), e
            else:
                assert not model.free_port(conf, kind) or e["requested"] != kind, e
                assert model.victim(conf, kind) == victim, (e, model.victim(conf, kind))
                assert confs[model.leases[victim].conf].priority > confs[conf].priority
                del model.leases[victim]
                preemptions += 1
            model.grant(e["participant"], conf, kind)
        elif e["type"] == "refused" and e["code"] == "capacity_exhausted":
            kinds = [kind] + (["audio"] if kind == "video" and e["downgrade"] == "1" else [])
            for k in kinds:
                assert not (model.under_ceiling(conf, k) and model.free_port(conf, k)), e
                assert model.victim(conf, k) is None, e
        elif e["type"] in ("left", "lease_expired"):
            model.leases.pop(e["participant"], None)
    return preemptions


async def test_importance_decides_across_processes(pool: Pool, redis_server: RedisServer,
                                                   redis: aioredis.Redis) -> None:
    """Hundreds of concurrent joins into conferences of importance 1, 3 and 5 (with reserves)."""
    outage = "o-00000000d00d"
    ledger = PortLedger(redis)
    assert await ledger.open_outage(outage, {"id": outage}, 8, 10)
    confs = {
        f"{outage}.c00000001": Conf(5, {"audio": 1, "video": 2}, {"audio": None, "video": None}),
        f"{outage}.c00000002": Conf(3, {"audio": 0, "video": 0}, {"audio": None, "video": 6}),
        f"{outage}.c00000003": Conf(1, {"audio": 0, "video": 0}, {"audio": None, "video": None}),
        f"{outage}.c00000004": Conf(5, {"audio": 0, "video": 0}, {"audio": None, "video": None}),
    }
    for cid, info in confs.items():
        assert await ledger.add_conference(outage, cid, {}, priority=info.priority, reserve=info.reserve,
                                           ceiling=info.ceiling) == "ok"
    total_preemptions = 0
    for rnd in range(3):
        rows = _round(pool, redis_server.url, outage, list(confs), rnd, churn=rnd == 2)
        total_preemptions += sum(1 for row in rows if row[6] is not None)
        use = await ledger.usage(outage)
        await _check_ledger(redis, outage, use["in_use"]["audio"], use["in_use"]["video"])
        assert use["in_use"] == {"audio": 8, "video": 10}  # over-subscribed: every port taken
        held = await ledger.conference_use(outage)
        top = held.get(f"{outage}.c00000003", {"audio": 0, "video": 0})
        assert top["video"] >= 2, held  # the most important conference holds ports of each round's winners
        for cid, info in confs.items():  # reserves held, ceilings kept
            for k in ("audio", "video"):
                n = held.get(cid, {}).get(k, 0)
                assert n >= min(info.reserve[k], n) and (info.ceiling[k] is None or n <= info.ceiling[k])
    events = await ledger.audit_events(outage, limit=100_000)
    assert total_preemptions > 0
    assert _replay(events, confs, {"audio": 8, "video": 10}) == total_preemptions

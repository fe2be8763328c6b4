"""Stateful property test: the Redis ledger against a plain Python model of the admission rules."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from infra.redisproc import RedisServer
from quotas import keys
from quotas.ledger import AdmitResult, PortLedger

O = "o-00000000cafe"
KINDS = ("audio", "video")
T0 = 1_700_000_000_000


@dataclass
class Lease:
    conf: str
    kind: str
    expiry: int


@dataclass
class Model:
    cap: dict[str, int]
    now: int = T0
    active: bool = True
    confs: dict[str, dict[str, int]] = field(default_factory=dict)  # conf -> reserve per kind
    leases: dict[str, Lease] = field(default_factory=dict)

    def use(self, kind: str, conf: str | None = None) -> int:
        return sum(1 for lease in self.leases.values()
                   if lease.kind == kind and (conf is None or lease.conf == conf))

    def reclaim(self) -> set[str]:
        gone = {p for p, lease in self.leases.items() if lease.expiry <= self.now}
        for p in gone:
            del self.leases[p]
        return gone

    def admissible(self, conf: str, kind: str) -> bool:
        use = self.use(kind)
        if use >= self.cap[kind]:
            return False

        def unmet(c: str) -> int:
            return max(0, self.confs[c][kind] - self.use(kind, c))

        others = sum(unmet(c) for c in self.confs if c != conf)
        return unmet(conf) > 0 or use + 1 + others <= self.cap[kind]

    def admit(self, conf: str, pid: str, kind: str, downgrade: bool, ttl: int) -> tuple[str, str | None]:
        if not self.active:
            return "ended", None
        if conf not in self.confs:
            return "no_conference", None
        self.reclaim()
        if pid in self.leases:
            return "granted", self.leases[pid].kind
        for k in [kind] + (["audio"] if kind == "video" and downgrade else []):
            if self.admissible(conf, k):
                self.leases[pid] = Lease(conf, k, self.now + ttl)
                return "granted", k
        return "full", kind


class LedgerMachine(RuleBasedStateMachine):
    url: str = ""

    conferences = Bundle("conferences")
    participants = Bundle("participants")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client: aioredis.Redis = aioredis.Redis.from_url(self.url, decode_responses=True)
        self.ledger = PortLedger(self.client)
        self.model = Model(cap={"audio": 0, "video": 0})
        self.n_conf = 0
        self.n_part = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.client.flushall())
            self.run(self.client.aclose())
        finally:
            self.loop.close()

    @initialize(target=conferences, audio=st.integers(0, 4), video=st.integers(0, 5))
    def open(self, audio: int, video: int) -> str:
        self.run(self.client.flushall())
        assert self.run(self.ledger.open_outage(O, {"id": O, "conferences": []}, audio, video))
        self.run(self.client.sadd(keys.ACTIVE_OUTAGES, O))
        self.model.cap = {"audio": audio, "video": video}
        return self._add_conf(0, 0, expect="ok")

    def _add_conf(self, ra: int, rv: int, expect: str | None = None) -> str:
        self.n_conf += 1
        cid = f"{O}.c{self.n_conf:08x}"
        res = self.run(self.ledger.add_conference(O, cid, {"id": cid}, ra, rv))
        m = self.model
        if not m.active:
            want = "ended"
        elif sum(r["audio"] for r in m.confs.values()) + ra > m.cap["audio"] or \
                sum(r["video"] for r in m.confs.values()) + rv > m.cap["video"]:
            want = "reserve_exceeds_capacity"
        else:
            want = "ok"
            m.confs[cid] = {"audio": ra, "video": rv}
        assert res == want
        if expect:
            assert res == expect
        return cid

    @rule(target=conferences, ra=st.integers(0, 3), rv=st.integers(0, 3))
    def add_conference(self, ra: int, rv: int) -> str:
        return self._add_conf(ra, rv)

    @rule(conf=consumes(conferences))
    def remove_conference(self, conf: str) -> None:
        released = set(self.run(self.ledger.remove_conference(O, conf)))
        m = self.model
        want = {p for p, lease in m.leases.items() if lease.conf == conf}
        for p in want:
            del m.leases[p]
        m.confs.pop(conf, None)
        assert released == want

    @rule(target=participants, conf=conferences, kind=st.sampled_from(KINDS), downgrade=st.booleans(),
          ttl=st.integers(1, 200))
    def admit(self, conf: str, kind: str, downgrade: bool, ttl: int) -> str:
        self.n_part += 1
        pid = f"{O}.p{self.n_part:08x}"
        self._admit(conf, pid, kind, downgrade, ttl)
        return pid

    @rule(target=participants, conf=conferences, kind=st.sampled_from(KINDS), downgrade=st.booleans(),
          n=st.integers(2, 6))
    def admit_burst(self, conf: str, kind: str, downgrade: bool, n: int) -> Any:
        """Several admissions in a row (fills a kind quickly, so reserves and caps bite)."""
        pids = []
        for _ in range(n):
            pids.append(self.admit(conf, kind, downgrade, 200))
        return multiple(*pids)

    @rule(conf=conferences, pid=participants, kind=st.sampled_from(KINDS), downgrade=st.booleans())
    def admit_again(self, conf: str, pid: str, kind: str, downgrade: bool) -> None:
        """A retry (or re-admission) with a participant id already used."""
        self._admit(conf, pid, kind, downgrade, 20)

    def _admit(self, conf: str, pid: str, kind: str, downgrade: bool, ttl: int) -> None:
        m = self.model
        held = m.leases.get(pid)
        r: AdmitResult = self.run(self.ledger.admit(O, conf, pid, kind, downgrade, ttl,  # type: ignore[arg-type]
                                                    {"id": pid}, now_ms=m.now))
        want_status, want_kind = m.admit(conf, pid, kind, downgrade, ttl)
        assert (r.status, r.kind) == (want_status, want_kind), (r, m)
        if r.status == "granted":
            assert r.kind is not None
            lease = m.leases[pid]
            assert r.lease_expires_ms == lease.expiry
            assert r.in_use == m.use(r.kind) and r.capacity == m.cap[r.kind]
            assert r.downgraded == (r.kind != kind)
            if held is None or held.expiry <= m.now:
                doc = json.loads(self.run(self.client.hget(keys.participants(O), pid)))
                assert doc["state"] == "admitted" and doc["kind"] == r.kind and doc["requested_kind"] == kind
        elif r.status == "full":
            assert r.lease_expires_ms == 0 and r.capacity == m.cap[kind] and r.in_use == m.use(kind)

    @rule(pid=participants)
    def release(self, pid: str) -> None:
        ok = self.run(self.ledger.release(O, pid))
        assert ok == (pid in self.model.leases)
        self.model.leases.pop(pid, None)
        if ok:
            doc = json.loads(self.run(self.client.hget(keys.participants(O), pid)))
            assert doc["state"] == "left"

    @rule(pid=participants, ttl=st.integers(1, 200), connected=st.booleans())
    def renew(self, pid: str, ttl: int, connected: bool) -> None:
        m = self.model
        res = self.run(self.ledger.renew(O, pid, ttl, now_ms=m.now, state="connected" if connected else None))
        lease = m.leases.get(pid)
        if lease is None or not m.active:
            assert res is None
        elif lease.expiry <= m.now:
            assert res is None
            del m.leases[pid]
        else:
            lease.expiry = m.now + ttl
            assert res == lease.expiry

    @rule(dt=st.integers(1, 100))
    def advance_clock(self, dt: int) -> None:
        self.model.now += dt

    @rule()
    def reclaim(self) -> None:
        got = set(self.run(self.ledger.reclaim_expired(O, now_ms=self.model.now)))
        assert got == (self.model.reclaim() if self.model.active else set())

    @rule()
    def sweep(self) -> None:
        got = self.run(self.ledger.sweep(now_ms=self.model.now))
        gone = self.model.reclaim() if self.model.active else set()
        assert set(got.get(O, [])) == gone
        assert set(got) <= {O}

    @precondition(lambda self: self.model.active and self.n_part > 6)
    @rule()
    def close(self) -> None:
        released = self.run(self.ledger.close_outage(O, "restored", "2024-01-01T00:00:00Z"))
        assert released is not None and set(released) == set(self.model.leases)
        self.model.active = False
        self.model.leases.clear()
        self.model.confs.clear()
        self.run(self.client.srem(keys.ACTIVE_OUTAGES, O))

    @invariant()
    def ledger_matches_model(self) -> None:
        if self.model.cap == {"audio": 0, "video": 0} and not self.model.confs:
            return  # before initialize
        m = self.model

        async def snapshot() -> tuple[Any, ...]:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.capacity(O))
                pipe.hgetall(keys.in_use(O))
                pipe.hgetall(keys.conference_use(O))
                pipe.hgetall(keys.lease_meta(O))
                pipe.zrange(keys.leases(O), 0, -1, withscores=True)
                pipe.hgetall(keys.reserves(O))
                return tuple(await pipe.execute())

        cap, use, cuse, lmeta, leases, resv = self.run(snapshot())
        if not m.active:
            assert cap == use == cuse == lmeta == resv == {} and leases == []
            return
        for k in KINDS:
            u = int(use.get(k, 0))
            assert 0 <= u <= int(cap[k]) == m.cap[k]
            assert u == m.use(k)
            assert u == sum(1 for v in lmeta.values() if v.endswith(f"|{k}"))
            assert u == sum(int(v) for f, v in cuse.items() if f.endswith(f":{k}"))
            assert sum(int(v) for f, v in resv.items() if f.endswith(f":{k}")) <= m.cap[k]
        assert all(int(v) > 0 for v in cuse.values())
        assert {p: int(s) for p, s in leases} == {p: lease.expiry for p, lease in m.leases.items()}
        assert lmeta == {p: f"{lease.conf}|{lease.kind}" for p, lease in m.leases.items()}


def test_ledger_state_machine(redis_server: RedisServer) -> None:
    LedgerMachine.url = redis_server.url
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=80,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

"""Stateful property test: the Redis ledger against a plain Python model of the admission rules
(capacity, reserves, ceilings, importance and preemption, leases)."""

from __future__ import annotations

import asyncio
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
from quotas.ledger import AdmitResult, PortLedger, RateLimit

O = "o-00000000cafe"
KINDS = ("audio", "video")
TTL = 600_000  # leases end in this test only when a rule expires them
FAST = RateLimit(burst=10_000, per_s=10_000)
ceilings = st.one_of(st.none(), st.integers(0, 6))


@dataclass
class Lease:
    conf: str
    kind: str
    seq: int
    expired: bool = False


@dataclass
class Conf:
    priority: int
    reserve: dict[str, int]
    ceiling: dict[str, int | None]


@dataclass
class Model:
    cap: dict[str, int]
    active: bool = True
    seq: int = 0
    confs: dict[str, Conf] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)

    def held(self, kind: str, conf: str | None = None) -> int:
        return sum(1 for lease in self.leases.values() if lease.kind == kind and (conf is None or lease.conf == conf))

    def reclaim(self) -> set[str]:
        gone = {p for p, lease in self.leases.items() if lease.expired}
        for p in gone:
            del self.leases[p]
        return gone

    def under_ceiling(self, conf: str, kind: str) -> bool:
        ceiling = self.confs[conf].ceiling[kind]
        return ceiling is None or self.held(kind, conf) < ceiling

    def free_port(self, conf: str, kind: str) -> bool:
        use = self.held(kind)
        if use >= self.cap[kind]:
            return False

        def unmet(c: str) -> int:
            return max(0, self.confs[c].reserve[kind] - self.held(kind, c))

        others = sum(unmet(c) for c in self.confs if c != conf)
        return unmet(conf) > 0 or use + 1 + others <= self.cap[kind]

    def victim(self, conf: str, kind: str) -> str | None:
        mine = self.confs[conf].priority
        candidates = []
        for c, info in self.confs.items():
            above = self.held(kind, c) - info.reserve[kind]
            if c != conf and info.priority > mine and above > 0:
                candidates.append((info.priority, above, c))
        if not candidates:
            return None
        chosen = max(candidates)[2]
        holders = [(lease.seq, p) for p, lease in self.leases.items() if lease.conf == chosen and lease.kind == kind]
        return max(holders)[1]

    def grant(self, pid: str, conf: str, kind: str) -> None:
        self.seq += 1
        self.leases[pid] = Lease(conf, kind, self.seq)

    def admit(self, conf: str, pid: str, kind: str, downgrade: bool) -> tuple[str, str | None, str | None]:
        """(status, kind, preempted participant)."""
        if not self.active:
            return "ended", None, None
        if conf not in self.confs:
            return "no_conference", None, None
        self.reclaim()
        if pid in self.leases:
            return "granted", self.leases[pid].kind, None
        kinds = [kind] + (["audio"] if kind == "video" and downgrade else [])
        for k in kinds:
            if self.under_ceiling(conf, k) and self.free_port(conf, k):
                self.grant(pid, conf, k)
                return "granted", k, None
        for k in kinds:
            if self.under_ceiling(conf, k):
                victim = self.victim(conf, k)
                if victim is not None:
                    del self.leases[victim]
                    self.grant(pid, conf, k)
                    return "granted", k, victim
        return "full", kind, None


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

    @initialize(target=conferences, audio=st.integers(0, 4), video=st.integers(1, 5), prio=st.sampled_from([1, 3, 5]))
    def open(self, audio: int, video: int, prio: int) -> Any:
        self.run(self.client.flushall())
        assert self.run(self.ledger.open_outage(O, {"id": O}, audio, video))
        self.run(self.client.sadd(keys.ACTIVE_OUTAGES, O))
        self.model.cap = {"audio": audio, "video": video}
        return multiple(self._add_conf(5, 0, 0, None, None), self._add_conf(prio, 0, 0, None, None))

    def _reserves_fit(self, conf: str, reserve: dict[str, int]) -> bool:
        m = self.model
        return all(sum(c.reserve[k] for cid, c in m.confs.items() if cid != conf) + reserve[k] <= m.cap[k]
                   for k in KINDS)

    def _add_conf(self, prio: int, ra: int, rv: int, ma: int | None, mv: int | None) -> str:
        self.n_conf += 1
        cid = f"{O}.c{self.n_conf:08x}"
        reserve = {"audio": ra, "video": rv}
        res = self.run(self.ledger.add_conference(O, cid, {"id": cid}, priority=prio, reserve=reserve,
                                                  ceiling={"audio": ma, "video": mv}))
        m = self.model
        if not m.active:
            want = "ended"
        elif not self._reserves_fit(cid, reserve):
            want = "reserve_exceeds_capacity"
        else:
            want = "ok"
            m.confs[cid] = Conf(prio, reserve, {"audio": ma, "video": mv})
        assert res == want
        return cid

    @rule(target=conferences, prio=st.sampled_from([1, 3, 5]), ra=st.integers(0, 3), rv=st.integers(0, 3), ma=ceilings,
          mv=ceilings)
    def add_conference(self, prio: int, ra: int, rv: int, ma: int | None, mv: int | None) -> str:
        if ma is not None:
            ma = max(ma, ra)
        if mv is not None:
            mv = max(mv, rv)
        return self._add_conf(prio, ra, rv, ma, mv)

    @rule(conf=conferences, prio=st.one_of(st.none(), st.sampled_from([1, 3, 5])), rv=st.one_of(st.none(), st.integers(0, 3)),
          mv=st.one_of(st.just("keep"), ceilings))
    def update_conference(self, conf: str, prio: int | None, rv: int | None, mv: Any) -> None:
        m = self.model
        ceiling = {} if mv == "keep" else {"video": mv}
        change = self.run(self.ledger.update_conference(
            O, conf, priority=prio, reserve={} if rv is None else {"video": rv}, ceiling=ceiling))
        if not m.active:
            assert change.status == "ended"
            return
        if conf not in m.confs:
            assert change.status == "no_conference"
            return
        info = m.confs[conf]
        reserve = {**info.reserve, **({} if rv is None else {"video": rv})}
        ceil = {**info.ceiling, **ceiling}
        if not self._reserves_fit(conf, reserve):
            assert change.status == "reserve_exceeds_capacity"
        elif any(ceil[k] is not None and ceil[k] < reserve[k] for k in KINDS):  # type: ignore[operator]
            assert change.status == "max_below_reserve"
        else:
            assert change.status == "ok"
            m.confs[conf] = Conf(info.priority if prio is None else prio, reserve, ceil)

    @rule(conf=consumes(conferences))
    def remove_conference(self, conf: str) -> None:
        released = set(self.run(self.ledger.remove_conference(O, conf)))
        m = self.model
        want = {p for p, lease in m.leases.items() if lease.conf == conf}
        for p in want:
            del m.leases[p]
        m.confs.pop(conf, None)
        assert released == want

    @rule(target=participants, conf=conferences, kind=st.sampled_from(KINDS), downgrade=st.booleans())
    def admit(self, conf: str, kind: str, downgrade: bool) -> str:
        self.n_part += 1
        pid = f"{O}.p{self.n_part:08x}"
        self._admit(conf, pid, kind, downgrade)
        return pid

    @rule(target=participants, conf=conferences, kind=st.sampled_from(KINDS), downgrade=st.booleans(),
          n=st.integers(2, 6))
    def admit_burst(self, conf: str, kind: str, downgrade: bool, n: int) -> Any:
        """Several admissions in a row (fills a kind quickly, so reserves, caps and preemption bite)."""
        return multiple(*[self.admit(conf, kind, downgrade) for _ in range(n)])

    @rule(conf=conferences, pid=participants, kind=st.sampled_from(KINDS), downgrade=st.booleans())
    def admit_again(self, conf: str, pid: str, kind: str, downgrade: bool) -> None:
        """A retry (or re-admission) with a participant id already used."""
        self._admit(conf, pid, kind, downgrade)

    def _admit(self, conf: str, pid: str, kind: str, downgrade: bool) -> None:
        m = self.model
        r: AdmitResult = self.run(self.ledger.admit(O, conf, pid, kind, downgrade, TTL,  # type: ignore[arg-type]
                                                    {"id": pid}, rate=FAST))
        before = {c: info.priority for c, info in m.confs.items()}
        want_status, want_kind, want_victim = m.admit(conf, pid, kind, downgrade)
        assert (r.status, r.kind, r.preempted) == (want_status, want_kind, want_victim), (r, m)
        if r.preempted is not None:
            # never an equal or more important conference, and its reserve stays met
            assert r.preempted_conference is not None and before[r.preempted_conference] > before[conf]
            info = m.confs[r.preempted_conference]
            assert m.held(r.kind, r.preempted_conference) >= info.reserve[r.kind]  # type: ignore[index]
        if r.status == "granted":
            assert r.kind is not None and r.in_use == m.held(r.kind) and r.capacity == m.cap[r.kind]
            assert r.downgraded == (r.kind != kind)

    @rule(pid=participants)
    def release(self, pid: str) -> None:
        ok = self.run(self.ledger.release(O, pid))
        assert ok == (pid in self.model.leases)
        self.model.leases.pop(pid, None)

    @rule(pid=participants, connected=st.booleans())
    def renew(self, pid: str, connected: bool) -> None:
        m = self.model
        res = self.run(self.ledger.renew(O, pid, TTL, state="connected" if connected else None))
        lease = m.leases.get(pid)
        if lease is None or not m.active:
            assert res.status == "gone"
        elif lease.expired:
            assert (res.status, res.reason) == ("gone", "lease_expired")
            del m.leases[pid]
        else:
            assert res.status == "renewed"

    @rule(pid=participants)
    def expire(self, pid: str) -> None:
        """The lease's time runs out (its expiry moves into the past)."""
        lease = self.model.leases.get(pid)
        if lease is not None and not lease.expired and self.model.active:
            assert self.run(self.client.zadd(keys.leases(O), {pid: 1}, xx=True, ch=True)) == 1
            lease.expired = True

    @rule()
    def sweep(self) -> None:
        got = self.run(self.ledger.sweep())
        gone = self.model.reclaim() if self.model.active else set()
        assert set(got.get(O, [])) == gone and set(got) <= {O}

    @precondition(lambda self: self.model.active and self.n_part > 40)
    @rule()
    def close(self) -> None:
        result = self.run(self.ledger.close_outage(O, "restored", 10**13))
        assert result is not None and set(result[0]) == set(self.model.leases)
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
                pipe.hgetall(keys.reserves(O))
                return tuple(await pipe.execute())

        cap, use, cuse, lmeta, resv = self.run(snapshot())
        if not m.active:
            assert cap == use == cuse == lmeta == resv == {}
            return
        for k in KINDS:
            u = int(use.get(k, 0))
            assert 0 <= u <= int(cap[k]) == m.cap[k]
            assert u == m.held(k) == sum(1 for v in lmeta.values() if v.endswith(f"|{k}"))
            assert u == sum(int(v) for f, v in cuse.items() if f.endswith(f":{k}"))
            assert sum(int(v) for f, v in resv.items() if f.endswith(f":{k}")) <= m.cap[k]
        assert lmeta == {p: f"{lease.conf}|{lease.kind}" for p, lease in m.leases.items()}


def test_ledger_state_machine(redis_server: RedisServer) -> None:
    LedgerMachine.url = redis_server.url
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

"""The load test's reading of the audit trails (loadtests/audit.py): replayed against the trail the real
ledger scripts write (no finding, the same counts as the answers), and against forged trails that break
the preemption rule one way each (each named); the accounting of locust's counts against the trail."""

from __future__ import annotations

import random
from collections import Counter

import redis as sync_redis
import redis.asyncio as aioredis

from loadtests.audit import Replay, TrailReader, account
from loadtests.scenario import admission_outcome
from quotas import keys
from quotas.ledger import PortLedger, RateLimit

O = "o-0123456789ab"
LIFTED = RateLimit(burst=1_000_000, per_s=1_000_000.0)


async def test_replay_of_the_real_ledgers_trail_finds_nothing_and_counts_every_answer(
        redis: aioredis.Redis, redis_url: str) -> None:
    """Hundreds of joins and leaves into conferences of priorities 1, 3, 5 (one with a reserve) over a small
    outage: many preemptions, every one by the rule; the trail's counts equal the answers'."""
    lg = PortLedger(redis)
    assert await lg.open_outage(O, {"id": O}, 3, 4, contract="LT-abc-001", serial="S1", ticket="BP-1")
    confs = {"c-one": 1, "c-three": 3, "c-five": 5}
    for conf, prio in confs.items():
        reserve = {"audio": 1, "video": 1} if prio == 5 else None
        assert await lg.add_conference(O, conf, {"title": conf}, priority=prio, reserve=reserve) == "ok"
    rng = random.Random(11)
    answers: Counter[str] = Counter()
    live: list[str] = []
    for i in range(400):
        if live and rng.random() < 0.35:
            pid = live.pop(rng.randrange(len(live)))
            await lg.leave(O, pid, {"type": "participant_left"})
            continue
        conf = rng.choice(list(confs))
        kind = rng.choice(["audio", "video", "video"])
        pid = f"{O}.p{i:04d}"
        res = await lg.admit(O, conf, pid, kind, rng.random() < 0.5, 60_000, {"id": pid}, rate=LIFTED)
        if res.status == "granted":
            live.append(pid)
            answers.update(admission_outcome(201, None, kind, res.kind, res.preempted is not None))
            if res.preempted in live:
                live.remove(res.preempted)
        else:
            assert res.status == "full"
            answers.update(admission_outcome(409, "capacity_exhausted"))
    reader = TrailReader(sync_redis.Redis.from_url(redis_url, decode_responses=True))
    reader.follow([O])
    assert reader.poll() == []
    replay = reader.replays[O]
    assert replay.complete and replay.contract == "LT-abc-001"
    assert replay.preemptions > 10 and replay.unknown_releases == 0
    assert {k: v for k, v in replay.counts.items() if v} == dict(answers)
    assert replay.held("c-five", "video") >= 0
    verdict = account(dict(answers), reader.of_run(contract_prefix="LT-abc-"))
    assert verdict.ok, verdict.detail
    assert reader.poll() == []          # nothing new: nothing read twice


async def test_reader_follows_a_stream_in_pages_and_from_where_it_stopped(redis: aioredis.Redis,
                                                                          redis_url: str) -> None:
    await redis.xadd(keys.audit(O), {"type": "declared", "contract": "K"})
    for i in range(2500):
        await redis.xadd(keys.audit(O), {"type": "refused", "code": "capacity_exhausted", "conference": "c"})
    reader = TrailReader(sync_redis.Redis.from_url(redis_url))
    reader.follow([O])
    reader.poll()
    assert reader.replays[O].counts["refused:capacity_exhausted"] == 2500
    await redis.xadd(keys.audit(O), {"type": "refused", "code": "conference_closed", "conference": "c"})
    reader.poll()
    assert reader.replays[O].events == 2502
    assert reader.replays[O].counts["refused:outage_ended"] == 1


def _trail(*events: dict[str, str]) -> tuple[Replay, list[str]]:
    r = Replay(O)
    found: list[str] = []
    base = [{"type": "declared", "contract": "K"},
            {"type": "conference_created", "conference": "a", "priority": "1", "reserve_audio": "0",
             "reserve_video": "0"},
            {"type": "conference_created", "conference": "b", "priority": "3", "reserve_audio": "0",
             "reserve_video": "1"},
            {"type": "conference_created", "conference": "c", "priority": "5", "reserve_audio": "0",
             "reserve_video": "0"}]
    for e in base + list(events):
        found += [f.detail for f in r.feed(e)]
    return r, found


def adm(pid: str, conf: str, kind: str = "video") -> dict[str, str]:
    return {"type": "admitted", "participant": pid, "conference": conf, "kind": kind, "requested": kind}


def pre(pid: str, conf: str, by: str, kind: str = "video") -> dict[str, str]:
    return {"type": "preempted", "participant": pid, "conference": conf, "kind": kind, "by": "x",
            "by_conference": by}


def test_a_preemption_by_the_rule_is_no_finding() -> None:
    r, found = _trail(adm("p1", "b"), adm("p2", "c"), adm("p3", "c"), pre("p3", "c", "a"), adm("x", "a"))
    assert found == []
    assert r.preemptions == 1 and r.held("c", "video") == 1 and r.held("a", "video") == 1


def test_an_equally_important_conference_preempted_is_named() -> None:
    _, found = _trail(adm("p1", "c"), adm("p2", "c"), pre("p2", "c", "c"))
    assert any("an equally or more important conference was preempted" in f for f in found)


def test_a_more_important_conference_preempted_is_named() -> None:
    _, found = _trail(adm("p1", "a"), pre("p1", "a", "c"))
    assert any("an equally or more important conference was preempted" in f for f in found)


def test_a_reserve_broken_is_named() -> None:
    _, found = _trail(adm("p1", "b"), pre("p1", "b", "a"))     # b holds 1, its reserve is 1
    assert any("its reserve was not kept" in f for f in found)


def test_not_the_least_important_first_is_named() -> None:
    _, found = _trail(adm("p1", "b"), adm("p2", "b"), adm("p3", "c"), pre("p2", "b", "a"))
    assert any("less important conference (c, priority 5)" in f for f in found)


def test_not_the_latest_participant_is_named() -> None:
    _, found = _trail(adm("p1", "c"), adm("p2", "c"), pre("p1", "c", "a"))
    assert any("not its most recently admitted participant (p2 came later)" in f for f in found)


def test_releases_and_outage_end_are_followed() -> None:
    r, found = _trail(adm("p1", "c"), {"type": "left", "participant": "p1", "conference": "c", "kind": "video"},
                      adm("p2", "c", "audio"), {"type": "lease_expired", "participant": "ghost"},
                      adm("p3", "b"), {"type": "restored", "participants": "2"})
    assert found == [] and r.holders == {} and r.unknown_releases == 1


def test_accounting_equal_mismatch_unanswered_and_trimmed() -> None:
    r, _ = _trail(adm("p1", "c"), {"type": "downgraded", "participant": "p2", "conference": "c", "kind": "audio",
                                   "requested": "video"},
                  {"type": "refused", "code": "capacity_exhausted"}, {"type": "refused", "code": "rate_limited"})
    tally = {"admitted": 2, "downgraded": 1, "refused:capacity_exhausted": 1, "refused:rate_limited": 1}
    assert account(tally, [r]).ok
    wrong = account({**tally, "refused:capacity_exhausted": 3}, [r])
    assert not wrong.ok and "409 capacity_exhausted: locust 3, trail 1" in wrong.detail
    # two answers never came: the trail may hold up to two decisions locust could not count
    assert account({**tally, "admitted": 1, "unknown": 2}, [r]).ok
    trimmed = Replay(O)
    trimmed.feed({"type": "admitted", "participant": "p", "conference": "c", "kind": "audio"})
    assert not account({"admitted": 1}, [trimmed]).ok
    assert not account({"admitted": 1}, []).ok

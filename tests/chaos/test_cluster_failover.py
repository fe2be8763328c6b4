"""High availability on a real Redis Cluster: 3 primaries with 2 replicas each (``cluster-node-timeout``
2 s), two brokers on its ``redis+cluster://`` URL under a steady admit-and-leave load, a stand-in for
the media node renewing the participants that stay (``renew`` with ``readmit``, as ``media/node.py``
does), and a kill -9 of the primary that owns the outage's slot.

Measured: when each broker grants again. Checked: the caps hold in the ledger at every instant the
watcher looks (every 50 ms); with ``--durability strict`` every acknowledged admission is in the
audit trail after the failover and no renewal had to re-admit a lost lease; with standard durability
and the replicas held back (SIGSTOP) across the kill, acknowledged writes are lost and the ledger
converges to the live sessions within 10 s (issue 14 item 2)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis

from infra.redisconn import connect
from quotas import keys
from quotas.ledger import PortLedger

from ..support.brokers import BrokerProcess, start_all
from ..support.cluster import ClusterSetup
from ..support.ledger_probe import live_leases
from ..support.workload import Answer, Target, admit, leave, seed

pytestmark = pytest.mark.slow

NODE_TIMEOUT_MS = int(os.environ.get("CHAOS_CLUSTER_NODE_TIMEOUT_MS", "2000"))  # cluster-node-timeout
RENEW_EVERY_S = 1.0
MEDIA_LEASE_MS = 8000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSetup]:
    # two replicas a shard: after the failover the new primary still has one, so WAIT 1 (strict) passes
    with ClusterSetup(tmp_path / "cluster", primaries=3, replicas_each=2, node_timeout_ms=NODE_TIMEOUT_MS) as setup:
        yield setup


@dataclass
class Run:
    """What the load, the media stand-in and the watcher saw."""

    log: list[tuple[int, Answer]] = field(default_factory=list)  # (broker index, answer)
    held: dict[str, str] = field(default_factory=dict)  # participants staying: pid -> kind
    renewed: int = 0
    readmitted: set[str] = field(default_factory=set)
    gone: dict[str, str] = field(default_factory=dict)  # pid -> why the ledger ended it
    peaks: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    known: list[float] = field(default_factory=list)  # per kill: s until every held session was live again
    promoted: list[float] = field(default_factory=list)  # per kill: s until the cluster named a new primary
    killed_at: float = 0.0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)  # hang-ups to come
    leaving: set[asyncio.Future[None]] = field(default_factory=set)  # hang-ups under way


async def _load(s: aiohttp.ClientSession, brokers: list[BrokerProcess], target: Target, stop: asyncio.Event,
                run: Run, worker: int) -> None:
    """One client: admit on its broker; most leave at once, one in four stays connected for 2-8 s
    (past a failover; renewed by the media stand-in meanwhile) and then leaves. Every answer is
    logged, retries too."""
    i = worker
    while not stop.is_set():
        b = i % len(brokers)
        kind = "video" if i % 3 else "audio"
        # as the join page: an Idempotency-Key, and the same request again after a 503 or no answer
        # (the admission may have been made: the retry gets that participant, no port is left unknown)
        key, deadline = f"chaos-{worker}-{i}", time.monotonic() + 20
        while True:
            answer = await admit(s, brokers[b].base_url, target, kind, timeout=5, idempotency_key=key)
            run.log.append((b, answer))
            if answer.status not in (0, 503) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if answer.status == 201:
            pid = answer.body["id"]
            if i % 4:
                await _leave(s, brokers[b], pid)
            else:
                run.held[pid] = kind
                run.timers.append(asyncio.get_running_loop().call_later(2 + (i % 7), _hang_up, s, brokers[b], pid, run))
        else:
            await asyncio.sleep(0.05)
        i += 6


async def _leave(s: aiohttp.ClientSession, broker: BrokerProcess, pid: str, within: float = 15) -> None:
    """DELETE, again after a 503 (as a page does) until it is done or the participant is gone."""
    deadline = time.monotonic() + within
    while await leave(s, broker.base_url, pid) not in (204, 404, 410) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def _hang_up(s: aiohttp.ClientSession, broker: BrokerProcess, pid: str, run: Run) -> None:
    async def bye() -> None:
        if run.held.pop(pid, None) is not None:
            await _leave(s, broker, pid)

    task = asyncio.ensure_future(bye())
    run.leaving.add(task)
    task.add_done_callback(run.leaving.discard)


async def _media(url: str, target: Target, stop: asyncio.Event, run: Run) -> None:
    """The media node's part: renew every held participant's lease every second, re-admitting a
    lease the ledger lost (``readmit``), as ``media/node.py`` does for a connected peer."""
    client = connect(url, decode_responses=True)
    ledger = PortLedger(client)
    try:
        while not stop.is_set():
            for pid, kind in list(run.held.items()):
                with contextlib.suppress(Exception):  # the primary is down for a while
                    res = await ledger.renew(target.outage, pid, MEDIA_LEASE_MS, state="connected",
                                             conference=target.conference, kind=kind, readmit=True)
                    run.renewed += 1
                    if res.status == "readmitted":
                        run.readmitted.add(pid)
                    elif res.status == "gone" and run.held.pop(pid, None) is not None:
                        run.gone[pid] = res.reason
            await asyncio.sleep(RENEW_EVERY_S)
    finally:
        await client.aclose(close_connection_pool=True)


async def _watch_caps(url: str, outage: str, stop: asyncio.Event, run: Run) -> None:
    client = connect(url, decode_responses=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the slot has no primary for a while: no sample then
                held = await live_leases(client, outage)
                for k, v in held.items():
                    run.peaks[k] = max(run.peaks.get(k, 0), v)
                run.samples += 1
            await asyncio.sleep(0.05)
    finally:
        await client.aclose(close_connection_pool=True)


def _resumed(run: Run, killed_at: float) -> dict[int, float | None]:
    """Per broker: when it answered from the ledger again (201 or 409 answered) after a 503 showed it
    had lost the primary."""
    lost = {b: min((a.at for b2, a in run.log if b2 == b and a.at > killed_at and a.status == 503), default=None)
            for b in (0, 1)}
    return {b: min((a.at + a.seconds for b2, a in run.log if b2 == b and lost[b] is not None
                    and a.at > lost[b] and a.status in (201, 409)), default=None) for b in (0, 1)}


async def _promoted(cluster: ClusterSetup, key: str, port: int, killed_at: float) -> float:
    """Seconds from the kill until the cluster names another primary for ``key``'s slot."""
    while True:
        with contextlib.suppress(Exception):
            if await asyncio.to_thread(cluster.primary_port_of, key) != port:
                return time.monotonic() - killed_at
        assert time.monotonic() - killed_at < 60, "no replica promoted within 60 s"
        await asyncio.sleep(0.1)


async def _wait_resumed(run: Run, killed_at: float) -> float:
    deadline = killed_at + 60
    while None in (back := _resumed(run, killed_at)).values():
        assert time.monotonic() < deadline, "the brokers did not resume within 60 s"
        await asyncio.sleep(0.05)
    return max(t for t in back.values() if t is not None) - killed_at


async def _acknowledged_in_trail(url: str, outage: str, run: Run) -> tuple[int, list[str]]:
    """(admissions answered 201, those of them missing from the outage's audit trail)."""
    client = connect(url, decode_responses=True)
    try:
        admitted = {f.get("participant") for _i, f in await client.xrange(keys.audit(outage), "-", "+")
                    if f.get("type") in ("admitted", "downgraded")}
    finally:
        await client.aclose(close_connection_pool=True)
    acked = list(dict.fromkeys(a.body["id"] for _b, a in run.log if a.status == 201))
    return len(acked), [p for p in acked if p not in admitted]


async def _known_again(url: str, target: Target, run: Run, killed_at: float, resumed_s: float,
                       within: float = 10) -> float:
    """Seconds from the kill until a ledger read shows every held (renewed) session live: a session
    whose admission died with the primary is known again once a renewal re-admitted it. Asserted
    within ``within`` s of the brokers' resuming (the failover's own length is measured apart)."""
    client = connect(url, decode_responses=True)
    ledger = PortLedger(client)
    try:
        while True:
            with contextlib.suppress(Exception):
                held = set(run.held)
                live = {p.id for p in await ledger.live_participants(target.outage)}
                if held <= live | (held - set(run.held)):  # (hung up meanwhile: no longer held)
                    return time.monotonic() - killed_at
            assert time.monotonic() - killed_at < resumed_s + within, (
                f"held sessions unknown to the ledger {within} s after the brokers resumed")
            await asyncio.sleep(0.1)
    finally:
        await client.aclose(close_connection_pool=True)


async def _converged(url: str, target: Target, run: Run, within: float) -> float:
    """Seconds from the kill until the ledger's live participants are exactly the held ones (and its
    in-use cache matches them): leases whose leave died with the primary have run out. The load is
    stopped (``within`` counts from now), the media stand-in still renews."""
    client = connect(url, decode_responses=True)
    ledger = PortLedger(client)
    t0, deadline = run.killed_at, time.monotonic() + within
    try:
        while True:
            with contextlib.suppress(Exception):
                live = {p.id for p in await ledger.live_participants(target.outage)}
                use = (await ledger.usage(target.outage))["in_use"]
                derived = await live_leases(client, target.outage)
                if live == set(run.held) and use == {k: derived.get(k, 0) for k in use}:
                    return time.monotonic() - t0
            assert time.monotonic() < deadline, (
                f"not converged within {within} s of the load's end: held {sorted(run.held)}, "
                f"live {sorted(live) if 'live' in locals() else '?'}")
            await asyncio.sleep(0.1)
    finally:
        await client.aclose(close_connection_pool=True)


async def _failover_under_load(cluster: ClusterSetup, tmp_path: Path, *, durability: str, load_s: float,
                               kills: int, hold_replicas_s: float = 0.0) -> tuple[Run, list[float], float, Target]:
    env = {"BACKUPPLUS_DURABILITY": durability}
    brokers = start_all([BrokerProcess(cluster.url, tmp_path / f"broker{i}.log", env=env) for i in range(2)])
    try:
        target = await seed(brokers[0].base_url)
        stop, media_stop = asyncio.Event(), asyncio.Event()
        run = Run()
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(_load(s, brokers, target, stop, run, w)) for w in range(6)]
            tasks.append(asyncio.create_task(_watch_caps(cluster.url, target.outage, stop, run)))
            media = asyncio.create_task(_media(cluster.url, target, media_stop, run))
            resumes: list[float] = []
            try:
                for n in range(kills):
                    await asyncio.sleep(load_s)
                    key = keys.capacity(target.outage)
                    stopped = await _hold_replicas(cluster, key, hold_replicas_s)
                    killed_at = run.killed_at = time.monotonic()
                    port = cluster.kill_primary_of(key)
                    if stopped:
                        await asyncio.sleep(0.2)
                        for pid in stopped:
                            os.kill(pid, signal.SIGCONT)
                    promoted = asyncio.create_task(_promoted(cluster, key, port, killed_at))
                    resumes.append(await _wait_resumed(run, killed_at))
                    run.promoted.append(await promoted)
                    run.known.append(await _known_again(cluster.url, target, run, killed_at, resumes[-1]))
                    assert cluster.primary_port_of(key) != port
                    if n + 1 < kills:  # the killed node rejoins as a replica: the next kill has one to promote
                        await asyncio.to_thread(cluster.restart, port)
                await asyncio.sleep(load_s)
            finally:
                stop.set()
                for timer in run.timers:  # the sessions still held stay (renewed) to the end
                    timer.cancel()
                await asyncio.gather(*tasks, *run.leaving)
            try:
                # a participant admitted but not connected whose leave was lost holds its port until
                # its admission lease (13 s from its admission) runs out and a sweep (every 2 s)
                # reclaims it: the promise of issue 14 item 4 ("expires within 15 s")
                took = await _converged(cluster.url, target, run, within=16)
            finally:
                media_stop.set()
                await media
        statuses = sorted({a.status for _b, a in run.log})
        assert set(statuses) <= {201, 409, 503}, statuses
        assert run.samples, "the cap watcher never read the ledger"
        assert run.peaks.get("video", 0) <= 10 and run.peaks.get("audio", 0) <= 8, run.peaks
        run.log.sort(key=lambda ba: ba[1].at)
        return run, resumes, took, target
    finally:
        for b in brokers:
            b.stop()


async def _hold_replicas(cluster: ClusterSetup, key: str, seconds: float) -> list[int]:
    """Stops the replicas of ``key``'s primary (SIGSTOP) and cuts their replication links on the
    primary (CLIENT KILL TYPE replica), for ``seconds`` before the kill: what the primary acknowledges
    meanwhile goes to no replica and is lost with it. Their pids (SIGCONT them after the kill)."""
    if seconds <= 0:
        return []
    port = cluster.primary_port_of(key)
    pids = [s.pid for s in cluster.replicas_of(key) if s.pid is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    primary = redis.Redis(port=port, socket_timeout=1)
    primary.client_kill_filter(_type="replica")
    assert primary.info("replication")["connected_slaves"] == 0
    await asyncio.sleep(seconds)
    return pids


def _report(title: str, run: Run, resumes: list[float], took: float) -> str:
    statuses = sorted({a.status for _b, a in run.log})
    slowest = max(a.seconds for _b, a in run.log)
    return (f"\n{title}: a replica promoted {', '.join(f'{r:.1f}' for r in run.promoted)} s after the kill "
            f"(cluster-node-timeout {NODE_TIMEOUT_MS} ms), brokers answering from the ledger again "
            f"{', '.join(f'{r:.1f}' for r in resumes)} s after the kill (target <= 10 s); {len(run.log)} admissions, "
            f"statuses {statuses}, slowest answer {slowest:.2f} s; ledger peak {run.peaks} in {run.samples} samples "
            f"(caps 10 video, 8 audio); {run.renewed} renewals, {len(run.readmitted)} re-admitted; every held "
            f"session live again {', '.join(f'{k:.1f}' for k in run.known)} s after the kill, ledger exactly the "
            f"live sessions {took:.1f} s after the last kill")


async def test_primary_kill_9_under_load_strict(cluster: ClusterSetup, tmp_path: Path) -> None:
    """--durability strict (WAIT 1 on the slot's primary): nothing acknowledged is lost."""
    run, resumes, took, target = await _failover_under_load(cluster, tmp_path, durability="strict", load_s=2, kills=1)
    acked, missing = await _acknowledged_in_trail(cluster.url, target.outage, run)
    print(_report("cluster failover, strict", run, resumes, took)
          + f"; {acked} acknowledged admissions, {len(missing)} missing from the trail")
    assert acked > 0 and missing == []
    assert run.readmitted == set()  # no lease acknowledged to the media node was lost either


@pytest.mark.chaos_long
async def test_failover_losing_writes_converges(cluster: ClusterSetup, tmp_path: Path) -> None:
    """Standard durability, the shard's replicas cut off 1 s before the kill: the primary's last
    acknowledged writes die with it; the media stand-in's renewals re-admit the lost sessions (every
    held session live again within 10 s of the kill) and the ports of lost leaves come back by their
    leases."""
    run, resumes, took, target = await _failover_under_load(cluster, tmp_path, durability="standard", load_s=3, kills=1,
                                                    hold_replicas_s=1.0)
    acked, missing = await _acknowledged_in_trail(cluster.url, target.outage, run)
    print(_report("cluster failover losing writes, standard", run, resumes, took)
          + f"; {acked} acknowledged admissions, {len(missing)} lost with the primary")
    assert missing, "the failover was meant to lose acknowledged admissions (replicas held back)"


@pytest.mark.chaos_long
async def test_three_failovers_in_a_row_under_load(cluster: ClusterSetup, tmp_path: Path) -> None:
    run, resumes, took, target = await _failover_under_load(cluster, tmp_path, durability="strict", load_s=10, kills=3)
    acked, missing = await _acknowledged_in_trail(cluster.url, target.outage, run)
    print(_report("cluster failover x3, strict", run, resumes, took)
          + f"; {acked} acknowledged admissions, {len(missing)} missing from the trail")
    assert missing == [] and run.readmitted == set()

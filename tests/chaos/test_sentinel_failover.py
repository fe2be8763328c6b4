"""High availability on real processes: a Redis Sentinel setup (1 primary, 2 replicas, 3 sentinels),
two brokers on its ``redis+sentinel://`` URL under a steady admit-and-leave load, and a kill -9 of
the primary. Measured: when each broker grants again; checked: the caps hold in the ledger at every
instant the watcher looks (every 50 ms), before, during and after the failover."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from infra.redisconn import connect

from ..support.brokers import BrokerProcess, start_all
from ..support.ledger_probe import live_leases
from ..support.sentinel import SentinelSetup
from ..support.workload import Answer, Target, admit, leave, seed

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSetup]:
    with SentinelSetup(tmp_path / "ha") as setup:
        yield setup


async def _load(s: aiohttp.ClientSession, brokers: list[BrokerProcess], target: Target, stop: asyncio.Event,
                log: list[tuple[int, Answer]], worker: int) -> None:
    """One client: admit on its broker, leave at once when granted (but one grant in four is kept:
    the caps get reached), again; logs (broker index, answer)."""
    i = worker
    while not stop.is_set():
        b = i % len(brokers)
        answer = await admit(s, brokers[b].base_url, target, "video" if i % 3 else "audio", timeout=5)
        log.append((b, answer))
        if answer.status == 201 and i % 4:
            await leave(s, brokers[b].base_url, answer.body["id"])
        if answer.status != 201:
            await asyncio.sleep(0.05)
        i += 2


async def _watch_caps(url: str, outage: str, stop: asyncio.Event, peaks: dict[str, int], samples: list[int]) -> None:
    client = connect(url, decode_responses=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the primary is down for a while: no sample then
                held = await live_leases(client, outage)
                for k, v in held.items():
                    peaks[k] = max(peaks.get(k, 0), v)
                samples.append(1)
            await asyncio.sleep(0.05)
    finally:
        await client.aclose(close_connection_pool=True)


async def _kill_and_wait_for_resume(sentinels: SentinelSetup, log: list[tuple[int, Answer]]) -> float:
    """kill -9 of the primary; seconds until both brokers answer from the ledger again (201 granted
    or 409 full, after a 503 showed they had lost the primary). The killed server then rejoins as a
    replica, so that a next kill leaves a primary to promote."""
    killed_at = time.monotonic()
    port = sentinels.kill_primary()
    deadline = killed_at + 60
    while True:
        lost = {b: min((a.at for b2, a in log if b2 == b and a.at > killed_at and a.status == 503), default=None)
                for b in (0, 1)}
        back = {b: min((a.at + a.seconds for b2, a in log if b2 == b and lost[b] is not None
                        and a.at > lost[b] and a.status in (201, 409)), default=None) for b in (0, 1)}
        if None not in back.values():
            break
        assert time.monotonic() < deadline, "the brokers did not resume within 60 s"
        await asyncio.sleep(0.05)
    assert sentinels.primary_port() != port
    await asyncio.to_thread(sentinels.restart, port)
    return max(t for t in back.values() if t is not None) - killed_at


async def _failover_under_load(sentinels: SentinelSetup, tmp_path: Path, load_s: float, kills: int) -> None:
    brokers = start_all([BrokerProcess(sentinels.url, tmp_path / f"broker{i}.log") for i in range(2)])
    try:
        target = await seed(brokers[0].base_url)
        stop = asyncio.Event()
        log: list[tuple[int, Answer]] = []
        peaks: dict[str, int] = {}
        samples: list[int] = []
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(_load(s, brokers, target, stop, log, w)) for w in range(6)]
            watcher = asyncio.create_task(_watch_caps(sentinels.url, target.outage, stop, peaks, samples))
            tasks.append(watcher)
            resumes: list[float] = []
            try:
                for _ in range(kills):
                    await asyncio.sleep(load_s)
                    resumes.append(await _kill_and_wait_for_resume(sentinels, log))
                await asyncio.sleep(load_s)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        statuses = sorted({a.status for _b, a in log})
        assert set(statuses) <= {201, 409, 503}, statuses
        assert samples, "the cap watcher never read the ledger"
        assert peaks.get("video", 0) <= 10 and peaks.get("audio", 0) <= 8, peaks
        slowest = max(a.seconds for _b, a in log)
        print(f"\nsentinel failover x{kills}: brokers answering from the ledger again {', '.join(f'{r:.1f}' for r in resumes)} s "
              f"(target <= 10 s); {len(log)} admissions, statuses {statuses}, slowest answer {slowest:.2f} s; "
              f"ledger peak {peaks} in {len(samples)} samples (caps 10 video, 8 audio)")
    finally:
        for b in brokers:
            b.stop()


async def test_primary_kill_9_under_load(sentinels: SentinelSetup, tmp_path: Path) -> None:
    await _failover_under_load(sentinels, tmp_path, load_s=3, kills=1)


@pytest.mark.chaos_long
async def test_three_failovers_in_a_row_under_load(sentinels: SentinelSetup, tmp_path: Path) -> None:
    await _failover_under_load(sentinels, tmp_path, load_s=10, kills=3)

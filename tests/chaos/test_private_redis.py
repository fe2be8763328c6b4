"""serve's own redis-server under faults, through the real CLI: kill -9 of the Redis (restarted on
its AOF, /healthz fails meanwhile, data kept), kill -9 of serve (its Redis goes with it; the next
serve starts one Redis on the AOF, not two), two serves on one state directory, and a Redis that
keeps dying (serve exits non-zero, saying why)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp

from infra.redisproc import PID_FILE

from ..support.brokers import BrokerProcess, start_all
from ..support.workload import admit, seed, until_ok


def _redis_pid(state: Path) -> int:
    return int(json.loads((state / PID_FILE).read_text())["pid"])


def _maybe_redis_pid(state: Path) -> int | None:
    try:
        return _redis_pid(state)
    except (OSError, ValueError):
        return None  # serve stopped (and removed its pidfile)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _redis_servers_on(data_dir: Path) -> list[int]:
    """Live redis-server processes whose working directory is ``data_dir``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ours = "redis-server" in (proc / "cmdline").read_text() and Path(os.readlink(proc / "cwd")) == data_dir
            if ours and _alive(int(proc.name)):
                out.append(int(proc.name))
        except OSError:
            continue
    return out


def _serve(tmp_path: Path, state: Path, name: str, **env: str) -> BrokerProcess:
    return BrokerProcess(None, tmp_path / f"{name}.log", args=["--state-dir", str(state)], env=env)


async def test_kill_9_of_the_private_redis_under_serve(tmp_path: Path) -> None:
    state = tmp_path / "state"
    serve = start_all([_serve(tmp_path, state, "serve")])[0]
    try:
        target = await seed(serve.base_url)
        async with aiohttp.ClientSession() as s:
            assert (await admit(s, serve.base_url, target, "video")).status == 201
            first = _redis_pid(state)
            os.kill(first, 9)
            t0 = time.monotonic()
            saw_unhealthy = False
            while time.monotonic() - t0 < 10:
                code = serve.healthz()
                saw_unhealthy |= code == 503
                if code == 200 and _redis_pid(state) != first:
                    break
                await asyncio.sleep(0.01)
            back = time.monotonic() - t0
            await until_ok(s, f"{serve.base_url}/v1/outages/{target.outage}", within=5)
            again = await admit(s, serve.base_url, target, "video")
        assert again.status == 201, again
        assert again.body["kind"] == "video"
        assert _redis_pid(state) != first and _alive(_redis_pid(state))
        assert "restarted on its AOF" in serve.log()
        print(f"\nprivate redis kill -9: serving again after {back:.2f} s; /healthz 503 seen: {saw_unhealthy}")
    finally:
        serve.stop()
    assert _redis_servers_on((state / "redis").resolve()) == []


async def test_kill_9_of_serve_takes_its_redis_and_the_next_serve_starts_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_all([_serve(tmp_path, state, "first")])[0]
    target = await seed(first.base_url)
    redis_pid = _redis_pid(state)
    first.kill()
    deadline = time.monotonic() + 5
    while _alive(redis_pid):
        assert time.monotonic() < deadline, "the private redis-server outlived serve"
        await asyncio.sleep(0.05)
    second = start_all([_serve(tmp_path, state, "second")])[0]
    try:
        assert _redis_servers_on((state / "redis").resolve()) == [_redis_pid(state)]
        async with aiohttp.ClientSession() as s:
            assert (await admit(s, second.base_url, target, "audio")).status == 201  # the AOF's outage
    finally:
        second.stop()


async def test_two_serves_on_one_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_all([_serve(tmp_path, state, "first")])[0]
    try:
        second = _serve(tmp_path, state, "second").start(wait=False)
        assert second.process is not None
        assert second.process.wait(60) == 1
        assert f"the state directory {state.resolve()} is in use by another `backupplus serve` (pid {first.pid})" \
            in second.log()
        assert "Traceback" not in second.log()
        assert first.healthz() == 200
        assert len(_redis_servers_on((state / "redis").resolve())) == 1
    finally:
        first.stop()


async def test_a_private_redis_that_keeps_dying_stops_serve(tmp_path: Path) -> None:
    state = tmp_path / "state"
    serve = start_all([_serve(tmp_path, state, "serve", BACKUPPLUS_PRIVATE_REDIS_RESTARTS="1")])[0]
    try:
        for _ in range(2):
            pid = _redis_pid(state)
            os.kill(pid, 9)
            deadline = time.monotonic() + 10
            while serve.process is not None and serve.process.poll() is None and _maybe_redis_pid(state) == pid:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert serve.process is not None and serve.process.wait(60) == 3
        assert "backupplus serve: the private redis-server died 2 times within 60 s (last: killed by SIGKILL)" \
            in serve.log()
    finally:
        serve.stop()
    assert _redis_servers_on((state / "redis").resolve()) == []

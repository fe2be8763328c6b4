"""Redis URLs: plain, and Sentinel (a real redis-server in sentinel mode watching a real primary); the
clients' retries and timeouts against a real Redis killed and restarted; the start-up checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.redisconn import (
    ReplicaWait,
    StoreMisconfigured,
    StorePolicy,
    check_store,
    connect,
    parse_sentinel_url,
    within_budget,
)
from infra.redisproc import RedisServer, free_port
from quotas import keys

from .api_helpers import AUTH, api_client, new_conference, open_outage


def test_parse_sentinel_url() -> None:
    assert parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/bp/2") == (
        [("10.0.0.1", 26379), ("10.0.0.2", 26380)], "bp", 2, "s3cret"
    )
    assert parse_sentinel_url("redis+sentinel://localhost:26379/bp") == ([("localhost", 26379)], "bp", 0, None)
    with pytest.raises(ValueError, match="names its service"):
        parse_sentinel_url("redis+sentinel://localhost:26379")
    with pytest.raises(ValueError, match="host:port"):
        parse_sentinel_url("redis+sentinel://localhost/bp")


@pytest.fixture
def sentinel_url(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # a sentinel rewrites its config: it must be a writable file
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor bp 127.0.0.1 {redis_server.port} 1\n"
        "sentinel down-after-milliseconds bp 2000\n"
    )
    proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            out = subprocess.run(["redis-cli", "-p", str(port), "sentinel", "get-master-addr-by-name", "bp"],
                                 capture_output=True, text=True, check=False).stdout
            if str(redis_server.port) in out:
                break
            assert time.monotonic() < deadline, "the sentinel did not come up"
            time.sleep(0.1)
        yield f"redis+sentinel://127.0.0.1:{port}/bp"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_plain_url_client(redis_url: str) -> None:
    client = connect(redis_url, decode_responses=True)
    assert await client.ping()
    await client.aclose(close_connection_pool=True)


async def test_the_broker_runs_through_sentinel(sentinel_url: str, redis) -> None:  # type: ignore[no-untyped-def]
    async with api_client(sentinel_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        r = await client.post(f"/v1/conferences/{conf['id']}/participants", json={"display_name": "s", "kind": "video"},
                              headers={"Authorization": f"Bearer {conf['join_token']}"})
        assert r.status == 201
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 0, "video": 1}
    # the sentinel led the broker to the primary: the outage is there
    assert await redis.hget(keys.outage_doc(outage["id"]), "state") == "active"


# --- retries, timeouts and the start-up check (issue 14) -------------------------------------------


async def _statuses(client, path: str, n: int, headers: dict[str, str]) -> list[tuple[int, float]]:  # type: ignore[no-untyped-def]
    async def one() -> tuple[int, float]:
        t0 = time.monotonic()
        r = await client.get(path, headers=headers)
        return r.status, time.monotonic() - t0

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_after_a_redis_restart_the_first_requests_succeed(tmp_path: Path) -> None:
    """The issue's row: pooled connections left dead by a restart were not retried, so requests got
    503 for seconds after Redis was back. Now the dead connection is replaced and the command sent again."""
    server = RedisServer(tmp_path / "r", persistent=True, fsync_always=True).start()
    try:
        async with api_client(server.url) as client:
            outage = await open_outage(client)
            conf = await new_conference(client, outage["id"])
            path = f"/v1/outages/{outage['id']}"
            # 12 concurrent reads: the pool holds at least that many connections
            assert {s for s, _ in await _statuses(client, path, 12, AUTH)} == {200}
            server.kill()
            server.start()  # same port, same AOF: nobody asked anything while it was down
            after = await _statuses(client, path, 12, AUTH)
            assert [s for s, _ in after] == [200] * 12, after
            r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                                  json={"display_name": "after", "kind": "video"},
                                  headers={"Authorization": f"Bearer {conf['join_token']}"})
            assert r.status == 201, await r.text()
    finally:
        server.stop()


async def test_redis_down_answers_503_within_2_s_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", persistent=True, fsync_always=True).start()
    try:
        async with api_client(server.url) as client:
            outage = await open_outage(client)
            path = f"/v1/outages/{outage['id']}"
            assert {s for s, _ in await _statuses(client, path, 4, AUTH)} == {200}
            server.kill()
            down = await _statuses(client, path, 8, AUTH)
            assert {s for s, _ in down} == {503}, down
            assert max(t for _, t in down) < 2.0, down
            r = await client.get(path, headers=AUTH)
            assert r.status == 503 and r.headers["Retry-After"] == "2"
            assert (await r.json())["code"] == "store_unavailable"
            server.start()
            assert {s for s, _ in await _statuses(client, path, 4, AUTH)} == {200}
    finally:
        server.stop()


async def test_retries_stop_within_their_budget() -> None:
    """Against a server that accepts and hangs up at once (as a restarting Redis does): several
    attempts with backoff, then the error, within the budget."""
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    policy = StorePolicy(command_timeout_s=0.1, connect_timeout_s=0.1, retries=10, retry_base_s=0.02,
                         retry_cap_s=0.1, retry_budget_s=0.6)
    client = connect(f"redis://127.0.0.1:{port}/0", policy=policy)
    try:
        t0 = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await client.ping()
        spent = time.monotonic() - t0
    finally:
        await client.aclose(close_connection_pool=True)
        listener.close()
        await listener.wait_closed()
    assert attempts >= 3, attempts
    assert spent < policy.retry_budget_s + 0.3, spent


async def test_a_broker_refuses_a_redis_that_may_evict(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", extra_args=["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]).start()
    try:
        client = connect(server.url)
        with pytest.raises(StoreMisconfigured, match="maxmemory-policy 'allkeys-lru'.*noeviction"):
            await check_store(client)
        await client.aclose(close_connection_pool=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "backupplus.cli", "serve", "--no-media", "--port", str(free_port()),
             "--redis-url", server.url, "--no-turn"],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert "backupplus serve: Redis has maxmemory-policy 'allkeys-lru'" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        server.stop()


async def test_strict_durability_refuses_a_primary_without_replicas(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, replica_wait=ReplicaWait(1, 100))
    with pytest.raises(StoreMisconfigured, match="waits for 1 replica.*has 0 connected"):
        await check_store(client)
    await client.aclose(close_connection_pool=True)
    await check_store(plain := connect(redis_server.url))  # noeviction, no write concern: fine
    await plain.aclose(close_connection_pool=True)


async def test_a_cluster_call_keeps_to_its_budget() -> None:
    """``within_budget`` (every command and pipeline of a ``redis+cluster://`` client): past the budget
    a redis TimeoutError (answered 503), a connection redis-py closed under the call a ConnectionError,
    an answer in time passes through."""

    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def torn() -> str:
        raise AttributeError("'NoneType' object has no attribute 'writelines'")

    async def quick() -> str:
        return "ok"

    t0 = time.monotonic()
    with pytest.raises(RedisTimeoutError, match="within 0.2 s"):
        await within_budget(0.2, slow(), "EVALSHA")
    assert time.monotonic() - t0 < 1
    with pytest.raises(RedisConnectionError, match="connection closed under the command"):
        await within_budget(0.2, torn(), "EVALSHA")
    assert await within_budget(0.2, quick(), "GET") == "ok"
    assert await within_budget(None, quick(), "GET") == "ok"

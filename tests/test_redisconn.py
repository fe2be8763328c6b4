"""Redis URLs: plain, and Sentinel (a real redis-server in sentinel mode watching a real primary)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.redisconn import connect, parse_sentinel_url
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

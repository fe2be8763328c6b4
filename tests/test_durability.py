"""``--durability strict`` on real processes: declares and admissions wait (WAIT) for a replica on the
write's own connection and answer 503 when none acknowledges in time; the private Redis fsyncs
each write."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.redisconn import ReplicaWait, connect
from infra.redisproc import PrivateRedis, RedisServer
from quotas import keys
from quotas.scripts import NotReplicated, ScriptRunner

from .api_helpers import api_client, new_conference, open_outage


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(tmp_path / "p").start()
    replica = RedisServer(tmp_path / "r", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        deadline = time.monotonic() + 20
        while redis.Redis(port=replica.port).info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


async def test_a_durable_script_waits_for_the_replica(primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = primary_and_replica
    client = connect(primary.url, decode_responses=True)
    runner = ScriptRunner(client)
    try:
        await runner.call("del_if_equal", ["k"], ["v"], wait=ReplicaWait(1, 300))  # acknowledged: no error
        await client.set("k", "v")
        replica.kill()
        t0 = time.monotonic()
        with pytest.raises(NotReplicated, match="0 of 1 replica"):
            await runner.call("del_if_equal", ["k"], ["v"], wait=ReplicaWait(1, 300))
        assert 0.25 < time.monotonic() - t0 < 1.5
        assert await client.get("k") is None  # the write itself happened on the primary
    finally:
        await client.aclose(close_connection_pool=True)


async def test_strict_admissions_answer_503_without_a_replica(primary_and_replica: tuple[RedisServer, RedisServer],
                                                              ) -> None:
    primary, replica = primary_and_replica
    async with api_client(primary.url, durability="strict", durability_wait_ms=300) as client:
        outage = await open_outage(client)  # the declare waited for the replica
        assert redis.Redis(port=replica.port).hget(keys.outage_doc(outage["id"]), "state") == b"active"
        conf = await new_conference(client, outage["id"])
        join = {"Authorization": f"Bearer {conf['join_token']}"}
        body = {"display_name": "strict", "kind": "video"}
        r = await client.post(f"/v1/conferences/{conf['id']}/participants", json=body, headers=join)
        assert r.status == 201, await r.text()
        replica.kill()
        r = await client.post(f"/v1/conferences/{conf['id']}/participants", json=body, headers=join)
        assert r.status == 503 and (await r.json())["code"] == "store_unavailable"


def test_strict_private_redis_fsyncs_each_write(tmp_path: Path) -> None:
    private = PrivateRedis(tmp_path, fsync_always=True).start()
    try:
        assert redis.Redis.from_url(private.url).config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        private.stop()
    standard = PrivateRedis(tmp_path).start()
    try:
        assert redis.Redis.from_url(standard.url).config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        standard.stop()

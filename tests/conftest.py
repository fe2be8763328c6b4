"""Shared fixtures: a real redis-server per test session (never a mock), flushed between tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from infra.redisproc import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


async def _flushed_client(server: RedisServer, *, decode_responses: bool) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, decode_responses=decode_responses)
    await client.flushall()
    try:
        yield client
    finally:
        await client.flushall()
        await client.aclose()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    async for client in _flushed_client(redis_server, decode_responses=True):
        yield client


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """The same store through a client that returns bytes (the ledger must work with both)."""
    async for client in _flushed_client(redis_server, decode_responses=False):
        yield client


@pytest.fixture(autouse=True)
def media_process_patches(request: pytest.FixtureRequest) -> None:
    """Tests marked ``media`` run with the process-wide patches a media node's process has: in
    production the composition root installs them (``backupplus serve``, ``backupplus media``)."""
    if request.node.get_closest_marker("media") is not None:
        from media import srtp

        srtp.install()

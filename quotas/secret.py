"""The HMAC secret every broker process and media node shares, kept in Redis and created once."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from quotas import keys


async def shared_secret(redis: aioredis.Redis) -> bytes:
    """The shared secret; the first process to ask creates it (SET NX), every other one reads it."""
    await redis.set(keys.SECRET, secrets.token_hex(32), nx=True)
    value = await redis.get(keys.SECRET)
    if value is None:  # pragma: no cover - deleted between the two calls
        raise RuntimeError("the shared secret vanished from Redis")
    return value.encode() if isinstance(value, str) else bytes(value)

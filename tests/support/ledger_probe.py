"""Reading and damaging an outage's ledger from outside, as a fault test needs: what Redis holds
right now (leases by kind, the counters), and a key of one outage lost."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from quotas import keys


async def live_leases(client: aioredis.Redis, outage_id: str) -> dict[str, int]:
    """Leases held per kind, from the lease metadata (``conference|kind`` per participant)."""
    meta = await client.hgetall(keys.lease_meta(outage_id))  # type: ignore[misc]
    out = {"audio": 0, "video": 0}
    for value in meta.values():
        kind = (value.decode() if isinstance(value, bytes) else str(value)).rsplit("|", 1)[-1]
        out[kind] = out.get(kind, 0) + 1
    return out


async def lose_key(client: aioredis.Redis, outage_id: str, key: Callable[[str], str] | str) -> bool:
    """Deletes one key of an outage (eviction, a partial restore, an operator's mistake): ``key`` is a
    ``quotas.keys`` function (``keys.in_use``, ``keys.lease_meta`` …) or a key name. True if it existed."""
    name = key(outage_id) if callable(key) else key
    return bool(await client.delete(name))

"""The media-node registry in Redis.

ZSET ``keys.MEDIA_NODES``: member = node id, score = last heartbeat (ms since epoch).
HASH ``keys.media_node(id)``: url, capacity, load (ports in use on it), reserved (ports promised to the
outages it hosts: 18 per outage), outages (count), state (ready|draining), started_at (RFC 3339), pid.
A node whose heartbeat is older than ``DEAD_AFTER_MS`` is dead; entries older than ``FORGET_AFTER_MS``
are pruned by whoever heartbeats next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from infra.text import as_str
from quotas import keys

HEARTBEAT_S = 2.0
DEAD_AFTER_MS = 5_000
FORGET_AFTER_MS = 300_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class NodeInfo:
    node_id: str
    url: str
    capacity: int
    load: int
    reserved: int
    state: str
    last_seen_ms: int

    @property
    def used(self) -> int:
        return max(self.load, self.reserved)

    def alive(self, at_ms: int | None = None) -> bool:
        return (at_ms if at_ms is not None else now_ms()) - self.last_seen_ms <= DEAD_AFTER_MS


async def publish(redis: Any, node_id: str, fields: dict[str, Any]) -> None:
    """One heartbeat: the hash, then the ZSET score; prune long-forgotten nodes."""
    ts = now_ms()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.media_node(node_id), mapping={k: str(v) for k, v in fields.items()})
        pipe.pexpire(keys.media_node(node_id), FORGET_AFTER_MS)
        pipe.zadd(keys.MEDIA_NODES, {node_id: ts})
        pipe.zremrangebyscore(keys.MEDIA_NODES, 0, ts - FORGET_AFTER_MS)
        await pipe.execute()


async def unregister(redis: Any, node_id: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.MEDIA_NODES, node_id)
        pipe.delete(keys.media_node(node_id))
        await pipe.execute()


async def list_nodes(redis: Any) -> list[NodeInfo]:
    """Every registered node (live or not), freshest first."""
    entries = await redis.zrange(keys.MEDIA_NODES, 0, -1, desc=True, withscores=True)
    if not entries:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for member, _ in entries:
            pipe.hgetall(keys.media_node(as_str(member)))
        hashes = await pipe.execute()
    nodes = []
    for (member, score), h in zip(entries, hashes):
        h = {as_str(k): as_str(v) for k, v in (h or {}).items()}
        nodes.append(
            NodeInfo(
                node_id=as_str(member),
                url=h.get("url", ""),
                capacity=int(h.get("capacity", 0) or 0),
                load=int(h.get("load", 0) or 0),
                reserved=int(h.get("reserved", 0) or 0),
                state=h.get("state", "ready") or "ready",
                last_seen_ms=int(score),
            )
        )
    return nodes


async def live_nodes(redis: Any) -> dict[str, NodeInfo]:
    ts = now_ms()
    return {n.node_id: n for n in await list_nodes(redis) if n.alive(ts) and n.url}


async def node_states(redis: Any) -> dict[str, int]:
    """For /metrics: how many registered nodes are ready, draining and dead (silent > 5 s)."""
    counts = {"ready": 0, "draining": 0, "dead": 0}
    ts = now_ms()
    for node in await list_nodes(redis):
        if not node.alive(ts):
            counts["dead"] += 1
        elif node.state == "draining":
            counts["draining"] += 1
        else:
            counts["ready"] += 1
    return counts


async def media_paths(redis: Any) -> dict[str, int]:
    """For /metrics: connected sessions on the live nodes by media path (direct, or relayed by TURN)."""
    counts = {"direct": 0, "relay": 0}
    ts = now_ms()
    entries = await redis.zrange(keys.MEDIA_NODES, 0, -1, withscores=True)
    live = [as_str(member) for member, score in entries if ts - int(score) <= DEAD_AFTER_MS]
    if not live:
        return counts
    async with redis.pipeline(transaction=False) as pipe:
        for node_id in live:
            pipe.hmget(keys.media_node(node_id), "sessions_direct", "sessions_relay")
        rows = await pipe.execute()
    for direct, relay in rows:
        counts["direct"] += int(as_str(direct) or 0) if direct is not None else 0
        counts["relay"] += int(as_str(relay) or 0) if relay is not None else 0
    return counts

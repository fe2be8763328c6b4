"""Placement of an outage's conferences on a media node (the control plane shared by brokers and nodes).

The outage keeps the node recorded in ``keys.media_node_of(outage)`` while that node is alive.
Otherwise (first offer, or the node died) the least-loaded live ready node with room for a full
outage is chosen and recorded with ``place_node.lua``, so concurrent offers of one outage agree on
one winner.
"""

from __future__ import annotations

from collections.abc import Collection

import redis.asyncio as aioredis

from infra.text import as_str

from . import keys, nodes
from .errors import NoNodeAvailable
from .scripts import ScriptRunner

PLACEMENT_TTL_MS = 30 * 24 * 3600 * 1000
_ATTEMPTS = 5


def least_loaded(candidates: list[nodes.NodeInfo], need: int) -> nodes.NodeInfo | None:
    """Selection strategy: the ready node with room for ``need`` ports and the least in use."""
    fits = [n for n in candidates if n.state == "ready" and n.capacity - n.used >= need]
    return min(fits, key=lambda n: (n.used, n.load, n.node_id)) if fits else None


async def place(
    redis: aioredis.Redis, scripts: ScriptRunner, outage: str, need: int, exclude: Collection[str] = ()
) -> nodes.NodeInfo:
    """The live node the outage's conferences are on, placing it first if needed."""
    key = keys.media_node_of(outage)
    for _ in range(_ATTEMPTS):
        live = await nodes.live_nodes(redis)
        current = as_str(await redis.get(key))
        if current and current in live and current not in exclude:
            return live[current]
        best = least_loaded([n for n in live.values() if n.node_id not in exclude], need)
        if best is None:
            raise NoNodeAvailable("no live media node has room for this outage")
        winner = as_str(await scripts.call("place_node", [key], [current or "", best.node_id, PLACEMENT_TTL_MS]))
        if winner == best.node_id:
            return best
        if winner in live and winner not in exclude:
            return live[winner]
    raise NoNodeAvailable("could not agree on a media node for this outage")

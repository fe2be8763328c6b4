"""Places each outage's conferences on a media node and hands participants' offers to it.

Placement: the outage keeps the node recorded in ``keys.media_node_of(outage)`` while that node is
alive (heartbeat within 5 s). Otherwise (first offer, or the node died) the least-loaded live ready
node with room for a full outage (audio + video ports, 18) is chosen and recorded with a
compare-and-set script, so concurrent offers of one outage agree on one winner. A node that refuses
(draining, full) is skipped and the outage placed again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from broker.secret import shared_secret
from broker.settings import Settings
from media import registry
from media.errors import MediaNodeError, NoMediaNode
from media.internal import OFFER_PATH, SIGNATURE_HEADER, sign
from quotas import keys

# Sets the placement only if it is still what the caller saw (ARGV[1], '' = none); returns the winner.
_PLACE_LUA = """
local cur = redis.call('GET', KEYS[1])
if (not cur and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return cur
"""
PLACEMENT_TTL_MS = 30 * 24 * 3600 * 1000
RETRY_CODES = {"draining", "node_full", "node_stopping", "node_starting"}
OFFER_TIMEOUT_S = 20.0


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def least_loaded(nodes: list[registry.NodeInfo], need: int) -> registry.NodeInfo | None:
    """Selection strategy: the ready node with room for ``need`` ports and the least in use."""
    fits = [n for n in nodes if n.state == "ready" and n.capacity - n.used >= need]
    return min(fits, key=lambda n: (n.used, n.load, n.node_id)) if fits else None


class MediaRouter:
    def __init__(
        self, redis: Any = None, settings: Settings | None = None, *, local_node: Any = None
    ) -> None:
        self.redis = redis
        self.settings = settings or Settings()
        self.local_node = local_node
        self._session: aiohttp.ClientSession | None = None
        self._secret: bytes | None = None
        self._place: Any = None

    def bind(self, redis: Any, settings: Settings, local_node: Any = None) -> None:
        self.redis, self.settings, self.local_node = redis, settings, local_node

    @property
    def outage_ports(self) -> int:
        return self.settings.audio_ports + self.settings.video_ports

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def placement(self, outage: str, exclude: set[str] = frozenset()) -> registry.NodeInfo:  # type: ignore[assignment]
        """The live node the outage's conferences are on, placing it first if needed."""
        if self._place is None:
            self._place = self.redis.register_script(_PLACE_LUA)
        key = keys.media_node_of(outage)
        for _ in range(5):
            nodes = await registry.live_nodes(self.redis)
            current = _s(await self.redis.get(key))
            if current and current in nodes and current not in exclude:
                return nodes[current]
            best = least_loaded([n for n in nodes.values() if n.node_id not in exclude], self.outage_ports)
            if best is None:
                raise NoMediaNode("no live media node has room for this outage")
            winner = _s(await self._place(keys=[key], args=[current or "", best.node_id, PLACEMENT_TTL_MS]))
            if winner == best.node_id:
                return best
            if winner in nodes and winner not in exclude:
                return nodes[winner]
        raise NoMediaNode("could not agree on a media node for this outage")

    async def offer(self, participant: dict[str, Any], sdp: str, sdp_type: str) -> dict[str, Any]:
        """The node's answer ({"type": "answer", "sdp"}); NoMediaNode or MediaNodeError otherwise."""
        outage = str(participant["outage"])
        refused: set[str] = set()
        while True:
            node = await self.placement(outage, refused)
            try:
                return await self._offer_to(node, participant, sdp, sdp_type)
            except MediaNodeError as exc:
                if exc.code in RETRY_CODES and len(refused) < 3:
                    refused.add(node.node_id)
                    continue
                raise

    async def _offer_to(
        self, node: registry.NodeInfo, participant: dict[str, Any], sdp: str, sdp_type: str
    ) -> dict[str, Any]:
        local = self.local_node
        if local is not None and node.node_id == local.node_id:
            return await local.handle_offer(participant, sdp, sdp_type)
        if self._secret is None:
            self._secret = await shared_secret(self.redis)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OFFER_TIMEOUT_S))
        body = json.dumps(
            {"participant": participant, "sdp": sdp, "type": sdp_type, "ts": int(time.time() * 1000)}
        ).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body)}
        try:
            async with self._session.post(node.url + OFFER_PATH, data=body, headers=headers) as resp:
                payload = await resp.json(content_type=None)
                if resp.status == 200 and isinstance(payload, dict) and "sdp" in payload:
                    return payload
                code = (
                    payload.get("code", "media_node_error")
                    if isinstance(payload, dict)
                    else "media_node_error"
                )
                detail = payload.get("detail", "") if isinstance(payload, dict) else ""
                raise MediaNodeError(str(code), str(detail), status=resp.status)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise MediaNodeError("node_unreachable", f"{node.node_id}: {type(exc).__name__}") from None


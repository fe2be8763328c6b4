"""Places each outage's conferences on a media node and hands participants' offers to it.

Placement is ``quotas.placement`` (shared with every broker); a node that refuses (draining, full)
is skipped and the outage placed again.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import aiohttp

from infra.settings import Settings
from media.errors import MediaNodeError, NoMediaNode
from media.internal import OFFER_PATH, sign_request
from quotas import nodes as registry
from quotas import placement
from quotas.errors import NoNodeAvailable
from quotas.scripts import ScriptRunner
from quotas.secret import KeyStore

RETRY_CODES = {"draining", "node_full", "node_stopping", "node_starting"}
OFFER_TIMEOUT_S = 20.0


class MediaRouter:
    def __init__(
        self, redis: Any = None, settings: Settings | None = None, *, local_node: Any = None
    ) -> None:
        self.redis = redis
        self.settings = settings or Settings()
        self.local_node = local_node
        self._session: aiohttp.ClientSession | None = None
        self._keys: KeyStore | None = None
        self._scripts: ScriptRunner | None = None

    def bind(self, redis: Any, settings: Settings, local_node: Any = None) -> None:
        self.redis, self.settings, self.local_node = redis, settings, local_node

    @property
    def outage_ports(self) -> int:
        return self.settings.audio_ports + self.settings.video_ports

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def placement(self, outage: str, exclude: Collection[str] = ()) -> registry.NodeInfo:
        """The live node the outage's conferences are on, placing it first if needed."""
        if self._scripts is None:
            self._scripts = ScriptRunner(self.redis)
        try:
            return await placement.place(self.redis, self._scripts, outage, self.outage_ports, exclude)
        except NoNodeAvailable as exc:
            raise NoMediaNode(str(exc)) from None

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
        if self._keys is None:
            self._keys = await KeyStore.load(self.redis, seed=self.settings.root_secret())
        ring = await self._keys.fresh()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OFFER_TIMEOUT_S))
        body = json.dumps({"participant": participant, "sdp": sdp, "type": sdp_type}).encode()
        headers = {
            "Content-Type": "application/json",
            **sign_request(ring.signing_key("internal"), method="POST", path=OFFER_PATH, node_id=node.node_id, body=body),
        }
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


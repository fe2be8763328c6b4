"""The node's internal HTTP endpoint: POST /internal/media/offer, authenticated with HMAC-SHA256.

The caller signs the exact body bytes with the shared secret (``quotas.secret.shared_secret``) and
sends ``X-Backupplus-Signature: sha256=<hex>``; the body carries ``ts`` (ms) and is refused when more
than ``MAX_SKEW_MS`` away from the node's clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from media.errors import MediaNodeError

SIGNATURE_HEADER = "X-Backupplus-Signature"
OFFER_PATH = "/internal/media/offer"
MAX_SKEW_MS = 60_000
MAX_BODY = 256 * 1024


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(sign(secret, body), str(header))


def _problem(status: int, code: str, detail: str = "") -> web.Response:
    return web.json_response(
        {
            "type": "about:blank",
            "title": code.replace("_", " "),
            "status": status,
            "code": code,
            "detail": detail,
        },
        status=status,
        content_type="application/problem+json",
    )


def add_internal_routes(app: web.Application, get_node: Callable[[], Any]) -> None:
    """Adds POST /internal/media/offer; ``get_node()`` returns the started MediaNode (or None)."""

    async def offer(request: web.Request) -> web.Response:
        node = get_node()
        if node is None or getattr(node, "secret", None) is None:
            return _problem(503, "node_starting", "the media node is not up yet")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _problem(413, "too_large")
        if not verify(node.secret, body, request.headers.get(SIGNATURE_HEADER)):
            return _problem(401, "bad_signature")
        try:
            data = json.loads(body)
            ts = int(data.get("ts", 0))
            participant, sdp, sdp_type = data["participant"], data["sdp"], data.get("type", "offer")
        except (ValueError, KeyError, TypeError):
            return _problem(400, "bad_request")
        if abs(int(time.time() * 1000) - ts) > MAX_SKEW_MS:
            return _problem(401, "stale_request")
        try:
            answer = await node.handle_offer(participant, sdp, sdp_type)
        except MediaNodeError as exc:
            return _problem(exc.status, exc.code, exc.detail)
        return web.json_response(answer)

    app.router.add_post(OFFER_PATH, offer)

"""The node's internal HTTP endpoint: POST /internal/media/offer, the broker → node call.

It is served on a listener of its own (``internal_app``), never on the public one: ``backupplus
serve`` binds it to ``--internal-host/--internal-port`` (loopback by default), ``backupplus media`` to
its ``--host/--port``. Each call is signed with the key ring's "internal" key (quotas.secret):
HMAC-SHA256 over a version tag, the timestamp (ms), a random nonce, the method, the path, the id of
the node it is meant for and the SHA-256 of the body. The node refuses a call signed for another
node, one whose timestamp is more than ``max_skew_ms`` away from its clock, and a replay: the nonce
is kept in Redis (``SET NX PX``) for twice that window, so a second use is refused on every node.
Only then does it read the body; the node itself checks the participant's lease in the ledger
(``MediaNode.handle_offer``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from media.errors import MediaNodeError
from quotas import keys as redis_keys

SIGNATURE_HEADER = "X-Backupplus-Signature"
NODE_HEADER = "X-Backupplus-Node"
NONCE_HEADER = "X-Backupplus-Nonce"
TIMESTAMP_HEADER = "X-Backupplus-Timestamp"
OFFER_PATH = "/internal/media/offer"
MAX_SKEW_MS = 60_000
MAX_BODY = 256 * 1024
_VERSION = b"bp-internal-v2"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def canonical(ts_ms: int, nonce: str, method: str, path: str, node_id: str, body: bytes) -> bytes:
    """The bytes under the MAC: everything that says what this call is, for whom, and when."""
    return b"\n".join([
        _VERSION, str(int(ts_ms)).encode(), nonce.encode(), method.upper().encode(), path.encode(),
        node_id.encode(), hashlib.sha256(body).hexdigest().encode(),
    ])


def _mac(key: bytes, message: bytes) -> str:
    return "v2=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_request(
    key: bytes, *, method: str, path: str, node_id: str, body: bytes,
    ts_ms: int | None = None, nonce: str | None = None,
) -> dict[str, str]:
    """The headers of a signed internal call (a fresh nonce and the current time unless given)."""
    ts = int(time.time() * 1000) if ts_ms is None else int(ts_ms)
    nonce = nonce or secrets.token_urlsafe(18)
    return {
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: nonce,
        NODE_HEADER: node_id,
        SIGNATURE_HEADER: _mac(key, canonical(ts, nonce, method, path, node_id, body)),
    }


def verify_mac(accepted: Sequence[bytes], headers: Any, method: str, path: str, node_id: str, body: bytes) -> bool:
    """Whether one of the ``accepted`` keys signed this call for ``node_id`` (timestamp not checked)."""
    ts, nonce, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(NONCE_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
    if not ts.isdigit() or not _NONCE.fullmatch(nonce) or not signature:
        return False
    message = canonical(int(ts), nonce, method, path, node_id, body)
    good = False
    for key in accepted:
        good |= hmac.compare_digest(_mac(key, message), str(signature))
    return good


def _problem(status: int, code: str, detail: str = "") -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": code.replace("_", " "), "status": status, "code": code, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )


async def _authentic(request: web.Request, node: Any, body: bytes) -> web.Response | None:
    """None when the call is signed for this node, fresh, and seen for the first time; else the refusal."""
    if request.headers.get(NODE_HEADER) != node.node_id:
        return _problem(401, "wrong_node", "this call was not signed for this node")
    ring = await node.keys.fresh()
    if not verify_mac(ring.accepted_keys("internal"), request.headers, request.method, request.path, node.node_id, body):
        return _problem(401, "bad_signature")
    max_skew_ms = int(node.settings.internal_max_skew_s * 1000)
    if abs(int(time.time() * 1000) - int(request.headers[TIMESTAMP_HEADER])) > max_skew_ms:
        return _problem(401, "stale_request")
    # after the MAC: only genuine calls spend a key. 2 x the window: a nonce outlives any timestamp it could carry.
    first = await node.redis.set(
        redis_keys.internal_nonce(request.headers[NONCE_HEADER]), node.node_id, nx=True, px=2 * max_skew_ms
    )
    if not first:
        return _problem(401, "replayed", "this call was already made")
    return None


def add_internal_routes(app: web.Application, get_node: Callable[[], Any]) -> None:
    """Adds POST /internal/media/offer to ``app`` (a listener of its own: see ``internal_app``);
    ``get_node()`` returns the started MediaNode (or None)."""

    async def offer(request: web.Request) -> web.Response:
        node = get_node()
        if node is None or getattr(node, "keys", None) is None:
            return _problem(503, "node_starting", "the media node is not up yet")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _problem(413, "too_large")
        refused = await _authentic(request, node, body)
        if refused is not None:
            return refused
        try:
            data = json.loads(body)
            participant, sdp, sdp_type = data["participant"], data["sdp"], data.get("type", "offer")
            if not isinstance(participant, dict) or not isinstance(sdp, str):
                raise TypeError("participant must be an object, sdp a string")
        except (ValueError, KeyError, TypeError):
            return _problem(400, "bad_request")
        try:
            answer = await node.handle_offer(participant, sdp, sdp_type)
        except MediaNodeError as exc:
            return _problem(exc.status, exc.code, exc.detail)
        return web.json_response(answer)

    app.router.add_post(OFFER_PATH, offer)


def internal_app(get_node: Callable[[], Any]) -> web.Application:
    """The internal listener's app: the internal routes and nothing else."""
    app = web.Application(client_max_size=MAX_BODY * 2)
    add_internal_routes(app, get_node)
    return app

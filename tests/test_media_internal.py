"""The internal channel (broker → media node): a MAC over nonce, timestamp, method, path, node id and
body; a replay refused (nonce SET NX PX in Redis); the node checks the participant's lease in the
ledger before it answers; the internal routes on a listener of their own, not the public one."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from backupplus.media_plane import MEDIA_PLANE, media_plane
from broker import ids
from infra.settings import Settings
from media.errors import MediaNodeError
from media.internal import OFFER_PATH, internal_app, sign_request
from media.node import MediaNode
from quotas.ledger import PortLedger
from tests.support.media_clients import Client, admit, seed_conference

from .api_helpers import OPERATOR

pytestmark = [pytest.mark.media, pytest.mark.timeout(60)]


@pytest.fixture
async def node(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[tuple[MediaNode, TestClient]]:
    node = MediaNode(Settings(redis_url=redis_url), node_id="node-int")
    await node.start(redis)
    client = TestClient(TestServer(internal_app(lambda: node)))
    await client.start_server()
    try:
        yield node, client
    finally:
        await client.close()
        await node.stop(release_state=None)


async def _signed(node: MediaNode, participant: dict[str, Any], sdp: str, **sign: Any) -> tuple[bytes, dict[str, str]]:
    assert node.keys is not None
    body = json.dumps({"participant": participant, "sdp": sdp, "type": "offer"}).encode()
    signed_for = sign.pop("node_id", node.node_id)
    headers = sign_request(node.keys.signing_key("internal"), method="POST", path=OFFER_PATH, node_id=signed_for,
                           body=body, **sign)
    return body, {**headers, "Content-Type": "application/json"}


async def _offer_sdp(participant: dict[str, Any]) -> tuple[Client, str]:
    client = Client(participant, want_video=False)
    await client.pc.setLocalDescription(await client.pc.createOffer())
    return client, client.pc.localDescription.sdp


async def test_a_replayed_call_is_refused(redis: aioredis.Redis, node: tuple[MediaNode, TestClient]) -> None:
    media, http = node
    ledger = PortLedger(redis)
    oid, cid = await seed_conference(ledger)
    participant = await admit(ledger, oid, cid, "first", "audio")
    browser, sdp = await _offer_sdp(participant)
    try:
        body, headers = await _signed(media, participant, sdp)
        first = await http.post(OFFER_PATH, data=body, headers=headers)
        assert first.status == 200, await first.text()
        assert "a=fingerprint" in (await first.json())["sdp"]
        again = await http.post(OFFER_PATH, data=body, headers=headers)  # the same bytes, sent again
        assert again.status == 401 and (await again.json())["code"] == "replayed"
        # signed for another node and relabelled, with an old timestamp, or with the body changed under the MAC
        old = int(time.time() * 1000) - 61_000
        for sign, relabel, changed, code in (({"node_id": "node-other"}, True, False, "bad_signature"),
                                             ({"ts_ms": old}, False, False, "stale_request"),
                                             ({}, False, True, "bad_signature")):
            body, headers = await _signed(media, participant, sdp, **sign)
            if relabel:
                headers["X-Backupplus-Node"] = media.node_id
            sent = body.replace(b"first", b"other") if changed else body
            r = await http.post(OFFER_PATH, data=sent, headers=headers)
            assert (r.status, (await r.json())["code"]) == (401, code)
        r = await http.post(OFFER_PATH, data=body, headers={"Content-Type": "application/json"})  # unsigned
        assert r.status == 401
        assert list(media.sessions) == [participant["id"]]  # only the first call did anything
    finally:
        await browser.close()


async def test_a_call_for_another_node_is_refused(node: tuple[MediaNode, TestClient]) -> None:
    media, http = node
    body, headers = await _signed(media, {"id": "p", "outage": "o", "conference": "c"}, "v=0", node_id="node-other")
    r = await http.post(OFFER_PATH, data=body, headers=headers)
    assert r.status == 401 and (await r.json())["code"] == "wrong_node"


async def test_an_unknown_participant_is_refused(redis: aioredis.Redis, node: tuple[MediaNode, TestClient]) -> None:
    media, http = node
    ledger = PortLedger(redis)
    oid, cid = await seed_conference(ledger)
    unknown = {"id": ids.new_participant_id(oid), "conference": cid, "outage": oid, "kind": "audio",
               "display_name": "nobody"}
    left = await admit(ledger, oid, cid, "left", "audio")
    await ledger.release(oid, left["id"], final_state="left")
    elsewhere = await admit(ledger, oid, cid, "real", "audio")
    elsewhere = {**elsewhere, "conference": ids.new_conference_id(oid)}  # a live lease, another conference
    for participant in (unknown, left, elsewhere):
        browser, sdp = await _offer_sdp(participant)
        try:
            body, headers = await _signed(media, participant, sdp)
            r = await http.post(OFFER_PATH, data=body, headers=headers)
            assert r.status == 410 and (await r.json())["code"] == "participant_gone", participant
            with pytest.raises(MediaNodeError) as caught:  # the in-process path: the same check
                await media.handle_offer(participant, sdp)
            assert caught.value.code == "participant_gone"
        finally:
            await browser.close()
    assert media.sessions == {} and media.rooms == {}


async def test_the_public_listener_has_no_internal_route(redis: aioredis.Redis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, operator_tokens=frozenset({OPERATOR}))
    app = create_app(settings, media_plane=media_plane(in_process_node=True), pages=False)
    assert not [r for r in app.router.resources() if r.canonical.startswith("/internal")]
    async with TestClient(TestServer(app)) as public:
        r = await public.post(OFFER_PATH, data=b"{}")
        assert r.status == 404
        node = app[MEDIA_PLANE].node
        assert node is not None and node.url.startswith("http://127.0.0.1:")
        assert node.url != str(public.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session, session.post(node.url + OFFER_PATH, data=b"{}") as internal:
            assert internal.status == 401  # the route is there, on the internal listener, and wants a MAC

"""Malformed and abusive SDP through the real HTTP API of a running broker with its in-process media
node (issue 15): every offer of the corpus, for an admitted participant and for a connected one, gets
a 4xx (422 ``invalid_sdp`` with its reason), never a 5xx; the ledger does not change (each keeps its
port, the counts are equal), the connected participant stays connected on the same peer connection,
and no file descriptor or asyncio task is left behind. The media node refuses the same offers on its
own (defense in depth) and the broker maps its refusal to 422."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Self

import aiohttp
import pytest
from aiohttp import web

from api.app import create_app
from backupplus.media_plane import MEDIA_PLANE, RouterGateway, media_plane
from broker.errors import InvalidSdp
from infra.redisproc import free_port
from infra.settings import Settings
from media.errors import MediaNodeError
from quotas.ledger import PortLedger
from tests.api_helpers import AUTH, OPERATOR, contract_body, declare_body
from tests.support.media_clients import Client, ToneTrack
from tests.support.sdp_corpus import corpus

pytestmark = [pytest.mark.media, pytest.mark.timeout(180)]

CHROME = (Path(__file__).parent / "support" / "offers" / "chrome.sdp").read_bytes().decode()
CORPUS = corpus(CHROME)
# Not SDP problems but the same route's other refusals of a malformed body: 4xx as well.
BODIES: dict[str, Any] = {
    "sdp not a string": {"type": "offer", "sdp": 123},
    "an answer": {"type": "answer", "sdp": CHROME},
    "no type": {"sdp": CHROME},
    "no sdp": {"type": "offer"},
    "70 KB body": {"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 14_000},
}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Broker:
    """A broker app with its media node on a free port, and an HTTP client to it."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        self.settings = Settings.from_env(
            redis_url=redis_url, port=self.port, operator_tokens=frozenset({OPERATOR}),
            media_remote_candidates="loopback", admission_rate_burst=10_000,
            admission_lease_s=120.0,  # the admitted-only participant keeps its port through the run
        )
        self.app = create_app(self.settings, pages=False, media_plane=media_plane(in_process_node=True))
        self.runner = web.AppRunner(self.app)
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.http = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()
        await self.runner.cleanup()

    async def call(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else AUTH
        async with self.http.request(method, path, headers=headers, **kw) as r:
            return r.status, await r.json(content_type=None)


async def _setup(b: Broker) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An outage, a conference and two audio participants: (outage, idle, live)."""
    assert (await b.call("PUT", "/v1/contracts/SER-T-1", json=contract_body()))[0] in (200, 201)
    status, outage = await b.call("POST", "/v1/outages", json=declare_body())
    assert status == 201, outage
    status, conf = await b.call("POST", f"/v1/outages/{outage['id']}/conferences", json={"title": "Board"})
    assert status == 201, conf
    joined = []
    for name in ("idle", "live"):
        status, p = await b.call("POST", f"/v1/conferences/{conf['id']}/participants", token=conf["join_token"],
                                 json={"display_name": name, "kind": "audio"})
        assert status == 201, p
        joined.append(p)
    return outage, joined[0], joined[1]


async def _state(b: Broker, redis: Any, outage: dict[str, Any], idle: dict[str, Any], live: dict[str, Any]) -> Any:
    """What must not change: the ledger's counts and both participants' records (the live one's lease
    is renewed by its node every 2 s: its state, kind and conference then)."""
    ledger = PortLedger(redis)
    usage = await ledger.usage(outage["id"])
    idle_rec = await ledger.participant(outage["id"], idle["id"])
    live_rec = await ledger.participant(outage["id"], live["id"])
    assert idle_rec is not None and live_rec is not None
    _, api_outage = await b.call("GET", f"/v1/outages/{outage['id']}")
    _, api_idle = await b.call("GET", f"/v1/participants/{idle['id']}")
    _, api_live = await b.call("GET", f"/v1/participants/{live['id']}")
    return (usage, api_outage["in_use"], idle_rec, api_idle,
            (live_rec.state, live_rec.kind, live_rec.conference),
            (api_live["state"], api_live["kind"], api_live["live"]))


async def _settled(baseline: tuple[int, int], timeout: float = 5.0) -> tuple[int, int]:
    """(fds, tasks) once back at the baseline, or what they are after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        now = (_fds(), len(asyncio.all_tasks()))
        if now == baseline or asyncio.get_running_loop().time() > deadline:
            return now
        await asyncio.sleep(0.1)


async def test_malformed_offers_get_4xx_and_change_nothing(redis, redis_url) -> None:  # type: ignore[no-untyped-def]
    async with Broker(redis_url) as b:
        outage, idle, live = await _setup(b)

        async def offer_over_http(participant: dict[str, Any], sdp: str, sdp_type: str) -> dict[str, Any]:
            status, answer = await b.call("POST", f"/v1/participants/{participant['id']}/offer",
                                          token=live["participant_token"], json={"type": sdp_type, "sdp": sdp})
            assert status == 200, answer
            return dict(answer)

        client = Client(live, audio=ToneTrack(440), want_video=False)
        try:
            await client.connect(offer_over_http)
            await client.wait_connected()
            node = b.app[MEDIA_PLANE].node
            assert node is not None
            session = node.sessions[live["id"]]
            await asyncio.sleep(2.5)  # the first renewal has made it "connected" in the ledger
            before = await _state(b, redis, outage, idle, live)
            assert before[4][0] == "connected" and before[3]["state"] == "admitted"
            # one refused offer first: whatever the first request of a kind sets up once is not a leak
            await b.call("POST", f"/v1/participants/{idle['id']}/offer", token=idle["participant_token"],
                         json={"type": "offer", "sdp": "hello world"})
            baseline = await _settled((_fds(), len(asyncio.all_tasks())), 0.5)

            answers: dict[str, int] = {}
            for who in (idle, live):
                for name, (sdp, reason) in CORPUS.items():
                    status, problem = await b.call("POST", f"/v1/participants/{who['id']}/offer",
                                                   token=who["participant_token"], json={"type": "offer", "sdp": sdp})
                    answers[f"{who['display_name']}: {name}"] = status
                    if len(json.dumps(sdp)) > b.settings.max_body_bytes:  # refused before it is read
                        assert status == 413 and problem["code"] == "body_too_large", (name, status, problem)
                        continue
                    assert status == 422 and problem["code"] == "invalid_sdp", (name, status, problem)
                    assert problem["reason"] == (reason or problem["reason"]), (name, problem)
                    assert "Error" not in problem["detail"], problem  # generic text, no exception
                for name, body in BODIES.items():
                    status, problem = await b.call("POST", f"/v1/participants/{who['id']}/offer",
                                                   token=who["participant_token"], json=body)
                    assert 400 <= status < 500, (name, status, problem)
                    answers[f"{who['display_name']}: {name}"] = status

            after = await _state(b, redis, outage, idle, live)
            assert after == before
            assert node.sessions.get(live["id"]) is session and idle["id"] not in node.sessions
            assert client.pc.connectionState == "connected"
            assert await _settled(baseline) == baseline, "a file descriptor or a task was left behind"
            print(f"\n{len(answers)} malformed offers: statuses {sorted(set(answers.values()))}")

            # the node on its own: the same offers refused before any peer connection is made, and the
            # broker's gateway maps the node's refusal to 422 invalid_sdp (never 502)
            gateway = RouterGateway(b.app[MEDIA_PLANE].router)
            _, doc = await b.call("GET", f"/v1/participants/{idle['id']}")
            participant = {**doc, "outage": outage["id"]}
            for name, (sdp, reason) in CORPUS.items():
                with pytest.raises(MediaNodeError) as refused:
                    await node.handle_offer(participant, sdp)
                assert (refused.value.code, refused.value.status) == ("invalid_sdp", 422), name
                with pytest.raises(InvalidSdp) as mapped:
                    await gateway.offer(participant, sdp, "offer")
                assert mapped.value.extra["reason"] == (reason or mapped.value.extra["reason"]), name
            assert set(node.sessions) == {live["id"]}
            assert await _state(b, redis, outage, idle, live) == before
        finally:
            await client.close()


async def test_an_offer_aiortc_refuses_is_422_not_502() -> None:
    """What passes the check but fails in aiortc (``bad_offer``) is the offer's fault: 422."""

    class Failing:
        async def offer(self, participant: dict[str, Any], sdp: str, sdp_type: str) -> dict[str, Any]:
            raise MediaNodeError("bad_offer", "ValueError: None is not in list", status=400)

    with pytest.raises(InvalidSdp) as mapped:
        await RouterGateway(Failing()).offer({}, "v=0", "offer")  # type: ignore[arg-type]
    assert mapped.value.extra == {"reason": "unparsable"} and mapped.value.detail is None

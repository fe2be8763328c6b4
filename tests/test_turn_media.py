"""Media through TURN: an aiortc participant allowed only relay candidates, reaching the TURN server over
TCP (and TLS), gets the conference's video (≤ 480 lines) and audio from a media node; the node counts
it as a relayed session (backupplus_media_sessions{path}); a new offer from a connected participant
keeps it the same participant on its port; --public-ip announces the node's address."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from broker.turn import credentials
from infra.settings import Settings
from infra.turnproc import TurnConfig, TurnServer, local_addresses, turnserver_binary
from media import aiortc_compat
from media.node import MediaNode
from media.routing import MediaRouter
from media.sdp import announce_public_ip, without_end_of_candidates
from quotas.ledger import PortLedger
from quotas.nodes import media_paths
from tests.support.media_clients import Client, ColourTrack, ToneTrack, admit, seed_conference, until

pytestmark = [
    pytest.mark.media, pytest.mark.timeout(90),
    pytest.mark.skipif(turnserver_binary() is None, reason="coturn is not installed (make setup)"),
]

SECRET = "media-turn-secret"


@pytest.fixture(scope="module")
def coturn() -> Iterator[TurnServer]:
    with TurnServer(TurnConfig(secret=SECRET, port=0, tls_port=0, allowed_peers=local_addresses())) as server:
        yield server


def _relay_only(server: TurnServer, pid: str, scheme: str) -> RTCConfiguration:
    username, password = credentials(SECRET, pid, int(time.time()) + 3600)
    url = (f"turn:{server.host}:{server.config.port}?transport=tcp" if scheme == "turn" else
           f"turns:{server.host}:{server.config.tls_port}?transport=tcp")
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url, username=username, credential=password)],
                            iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def _path(client: Client) -> tuple[str, str] | None:
    return aiortc_compat.selected_candidate_types(client.pc.getTransceivers()[0].receiver.transport.transport)


async def test_an_aiortc_client_through_turn_tcp_gets_media(redis, coturn: TurnServer) -> None:  # type: ignore[no-untyped-def]
    """(TURN over TLS is shown with Chromium: aiortc takes no CA for a turns: server's certificate.)"""
    scheme = "turn"
    ledger = PortLedger(redis)
    node = MediaNode(Settings(media_remote_candidates="loopback"), url="http://127.0.0.1:9")
    await node.start(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger)
    speaker = Client(await admit(ledger, oid, cid, "direct"), audio=ToneTrack(440), video=ColourTrack((82, 90, 240)))
    pid = (await admit(ledger, oid, cid, "behind a firewall"))
    relayed = Client(pid, config=_relay_only(coturn, pid["id"], scheme))
    try:
        for client in (speaker, relayed):
            await client.connect(router.offer)
        for client in (speaker, relayed):
            await client.wait_connected(20)
        assert " typ relay" in relayed.pc.localDescription.sdp
        assert " typ host" not in relayed.pc.localDescription.sdp  # relay only: nothing else offered
        await until(lambda: relayed.video_frames >= 10, 20)
        await until(lambda: relayed.tone_prominence(440) > 10, 10)
        assert 0 < relayed.max_height <= 480
        assert _path(relayed) == ("relay", "host")
        assert node.paths() == {"direct": 1, "relay": 1}
        await node._publish()
        assert await media_paths(redis) == {"direct": 1, "relay": 1}

        # A new offer from the connected participant with new ICE credentials (aiortc cannot restart ICE
        # on one peer connection; the browser's ICE restart is in test_turn_browser.py): the same
        # participant on the same port, through TURN again, and media flows again.
        before = (await ledger.usage(oid))["in_use"]
        await relayed.pc.close()
        again = Client(pid, config=_relay_only(coturn, pid["id"], scheme))
        relayed = again
        await again.connect(router.offer)
        await again.wait_connected(20)
        await until(lambda: again.video_frames >= 10, 20)
        assert (await ledger.usage(oid))["in_use"] == before
        assert _path(again) == ("relay", "host")
    finally:
        for client in (speaker, relayed):
            await client.close()
        await node.stop()
        await router.close()


def test_public_ip_announces_the_node_and_keeps_its_own_address() -> None:
    lines = ["v=0", "m=audio 40000 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 10.0.0.5",
             "a=candidate:abc 1 udp 2130706431 10.0.0.5 40000 typ host",
             "a=candidate:def 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 10.0.0.5 rport 40000", ""]
    sdp = "\r\n".join(lines)
    out = announce_public_ip(sdp, "203.0.113.10").split("\r\n")
    assert "c=IN IP4 203.0.113.10" in out
    assert "a=candidate:abcp 1 udp 2130706431 203.0.113.10 40000 typ host" in out
    assert "a=candidate:abc 1 udp 2130706430 10.0.0.5 40000 typ host" in out
    assert any(" typ srflx" in line for line in out)  # other candidates as they were


def test_the_end_of_candidates_marker_is_dropped_from_offers() -> None:
    """(aioice drops a component whose remote candidates it cannot use once told they are complete,
    then answers without candidates: Firefox's mDNS host candidates, unresolvable here.)"""
    offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=candidate:0 1 UDP 1 x.local 5 typ host\r\na=end-of-candidates\r\na=mid:0\r\n"
    assert without_end_of_candidates(offer) == "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 109\r\n" \
        "a=candidate:0 1 UDP 1 x.local 5 typ host\r\na=mid:0\r\n"
    assert without_end_of_candidates(offer.replace("\r\n", "\n")).count("end-of-candidates") == 0

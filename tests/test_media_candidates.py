"""Remote ICE candidates: the node sends no connectivity check to an address its policy refuses.

The finding (issue 15): 200 candidates on 127.0.0.1 in one offer made the node send STUN binding
requests to local UDP ports. Here a UDP socket on loopback plays the local service: under the
"public" policy nothing reaches it (from the SDP nor trickled), under "loopback" the same offer does.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from infra.settings import Settings
from media.candidates import allowed, classify
from media.node import MediaNode
from quotas.ledger import PortLedger
from tests.support.media_clients import admit, seed_conference

pytestmark = [pytest.mark.media, pytest.mark.timeout(60)]

LISTEN_S = 3.0


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("8.8.8.8", "public"), ("192.0.2.2", "public"), ("2001:4860::8888", "public"),
        ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
        ("192.168.1.1", "private"), ("100.64.0.1", "private"), ("fd00::2", "private"),
        ("::ffff:10.0.0.1", "private"), ("169.254.1.1", "never"), ("fe80::1", "never"),
        ("fe80::1%eth0", "never"), ("224.0.0.251", "never"), ("ff02::1", "never"), ("0.0.0.0", "never"),
        ("0.1.2.3", "never"), ("::", "never"), ("255.255.255.255", "never"), ("not-an-ip.local", "never"),
    ],
)
def test_addresses_are_classified(host: str, kind: str) -> None:
    assert classify(host) == kind
    assert allowed(host, "loopback") == (kind != "never")
    assert allowed(host, "private") == (kind in ("public", "private"))
    assert allowed(host, "public") == (kind == "public")


class Listener(asyncio.DatagramProtocol):
    """A local UDP service: counts the datagrams that reach it."""

    def __init__(self) -> None:
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams += 1


async def _offer_on_loopback(ports: list[int]) -> str:
    """A real aiortc audio offer whose only candidates point at ``ports`` on 127.0.0.1, without
    end-of-candidates (so more may be trickled)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    lines = [line for line in sdp.split("\r\n") if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=ice-ufrag"))
    fake = [f"a=candidate:{i + 1} 1 udp {2130706431 - i} 127.0.0.1 {port} typ host" for i, port in enumerate(ports)]
    return "\r\n".join(lines[:at] + fake + lines[at:])


async def _probe(redis: Any, policy: str) -> tuple[int, int, MediaNode]:
    """Datagrams that reached a loopback port named in the offer, and one trickled afterwards."""
    loop = asyncio.get_running_loop()
    in_sdp, trickled = Listener(), Listener()
    t1, _ = await loop.create_datagram_endpoint(lambda: in_sdp, local_addr=("127.0.0.1", 0))
    t2, _ = await loop.create_datagram_endpoint(lambda: trickled, local_addr=("127.0.0.1", 0))
    port1, port2 = t1.get_extra_info("sockname")[1], t2.get_extra_info("sockname")[1]
    node = MediaNode(Settings(media_remote_candidates=policy), url="http://127.0.0.1:9")  # type: ignore[arg-type]
    await node.start(redis)
    try:
        ledger = PortLedger(redis)
        oid, cid = await seed_conference(ledger)
        participant = await admit(ledger, oid, cid, "prober", "audio")
        answer = await node.handle_offer(participant, await _offer_on_loopback([port1]))
        assert re.search(r"^a=candidate:", answer["sdp"], re.MULTILINE)
        session = node.sessions[participant["id"]]
        late = candidate_from_sdp(f"9 1 udp 2130706000 127.0.0.1 {port2} typ host")
        late.sdpMLineIndex = 0
        await session.pc.addIceCandidate(late)
        await asyncio.sleep(LISTEN_S)
        return in_sdp.datagrams, trickled.datagrams, node
    finally:
        await node.stop()
        t1.close()
        t2.close()


async def test_no_check_reaches_loopback_under_the_public_policy(redis) -> None:  # type: ignore[no-untyped-def]
    in_sdp, trickled, node = await _probe(redis, "public")
    assert (in_sdp, trickled) == (0, 0)
    assert node.dropped_candidates == 2  # counted (and logged), one from the SDP, one trickled


async def test_the_same_offer_reaches_loopback_under_the_loopback_policy(redis) -> None:  # type: ignore[no-untyped-def]
    in_sdp, trickled, node = await _probe(redis, "loopback")
    assert in_sdp >= 1 and trickled >= 1  # STUN binding requests: the probe itself works
    assert node.dropped_candidates == 0

"""media.feedback: REMB at most every 200 ms unless the estimate drops by 3%; other RTCP untouched."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpRrPacket,
    pack_remb_fci,
)

from media import aiortc_compat
from media.feedback import REMB_INTERVAL_S, RembThrottle, throttle_remb

pytestmark = pytest.mark.media


def remb(bitrate: int) -> RtcpPsfbPacket:
    return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bitrate, [1234]))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_remb_storm_is_thinned_but_a_drop_passes_at_once() -> None:
    sent: list[Any] = []

    async def send(packet: Any) -> None:
        sent.append(packet)

    clock = Clock()
    throttle = RembThrottle(send, clock=clock)
    await throttle(remb(1_000_000))
    for _ in range(50):  # the estimator "overusing": one REMB per packet, 1 ms apart
        clock.now += 0.001
        await throttle(remb(1_000_000))
    assert len(sent) == 1 and throttle.suppressed == 50

    await throttle(remb(990_000))  # -1%: not worth breaking the interval
    assert len(sent) == 1
    await throttle(remb(950_000))  # -5%: congestion news goes out at once
    assert len(sent) == 2
    clock.now += REMB_INTERVAL_S
    await throttle(remb(960_000))  # the interval has passed: the next one goes out
    assert len(sent) == 3
    assert throttle.sent == 3


async def test_other_rtcp_is_never_held_back() -> None:
    sent: list[Any] = []

    async def send(packet: Any) -> None:
        sent.append(packet)

    throttle = RembThrottle(send, clock=Clock())
    await throttle(remb(500_000))
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2)
    rr = RtcpRrPacket(ssrc=1)
    for packet in (pli, rr, pli):
        await throttle(packet)
    assert sent[1:] == [pli, rr, pli]


async def test_installed_on_a_real_receiver() -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        original = aiortc_compat.receiver_send_rtcp(receiver)
        hook = throttle_remb(receiver)
        # the receiver's NACK/PLI/REMB paths all go through it ...
        assert isinstance(aiortc_compat.receiver_send_rtcp(receiver), RembThrottle)
        hook.remove()  # ... until the session ends
        assert aiortc_compat.receiver_send_rtcp(receiver) == original
    finally:
        await pc.close()

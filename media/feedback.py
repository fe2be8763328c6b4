"""Congestion feedback the node sends: REMB at a sane rate.

aiortc's receiver sends a REMB each time its delay-based estimate is updated, which while its detector
reads "overusing" is every packet. A node short of CPU delays its own packets, reads that as
congestion and floods REMBs, which costs more CPU: a feedback loop. libwebrtc's rule (RembThrottler)
is followed: a REMB at most every 200 ms, unless the estimate drops by 3% or more since the last one
sent, which goes at once (a sender must hear about congestion without delay). Figures: docs/MEDIA.md.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from media import aiortc_compat

REMB_INTERVAL_S = 0.2
REMB_DROP_FRACTION = 0.97


class RembThrottle:
    """Wraps one receiver's RTCP send; everything but REMB passes untouched."""

    def __init__(
        self,
        send: Callable[[Any], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._clock = clock
        self._last_at = -1e9
        self._last_bitrate: int | None = None
        self.sent = 0
        self.suppressed = 0

    def should_send(self, bitrate: int) -> bool:
        now = self._clock()
        dropped = self._last_bitrate is not None and bitrate < self._last_bitrate * REMB_DROP_FRACTION
        if now - self._last_at >= REMB_INTERVAL_S or dropped:
            self._last_at, self._last_bitrate = now, bitrate
            return True
        return False

    async def __call__(self, packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, _ = unpack_remb_fci(packet.fci)
            except ValueError:
                bitrate = None
            if bitrate is not None and not self.should_send(bitrate):
                self.suppressed += 1
                return
            self.sent += 1
        await self._send(packet)


def throttle_remb(receiver: RTCRtpReceiver) -> aiortc_compat.Hook:
    """Put a :class:`RembThrottle` in the way of every RTCP packet ``receiver`` sends."""
    throttle = RembThrottle(aiortc_compat.receiver_send_rtcp(receiver))
    return aiortc_compat.replace_receiver_send_rtcp(receiver, throttle)

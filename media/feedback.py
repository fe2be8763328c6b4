"""Congestion feedback the node sends: REMB at a sane rate.

aiortc's receiver runs a delay-based bandwidth estimator on every packet carrying abs-send-time and
sends a REMB each time the estimate is updated, and while its detector reads "overusing" that is
*every packet*. A node short of CPU delays its own packets, the detector reads that as congestion,
and the node starts sending a REMB per received packet (seen here: ~500 SRTCP packets a second for
one outage), which costs more CPU: a feedback loop. libwebrtc's answer (RembThrottler) is followed
here: a REMB goes out at most every 200 ms, unless the estimate drops by 3% or more since the last
one sent, which is passed at once (a sender must hear about congestion without delay).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

REMB_INTERVAL_S = 0.2
REMB_DROP_FRACTION = 0.97


class RembThrottle:
    """Wraps one receiver's ``_send_rtcp``; everything but REMB passes untouched."""

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


def throttle_remb(receiver: RTCRtpReceiver) -> RembThrottle:
    """Install a :class:`RembThrottle` on ``receiver`` (an instance attribute over the method)."""
    throttle = RembThrottle(receiver._send_rtcp)
    receiver._send_rtcp = throttle  # type: ignore[method-assign]
    return throttle

"""Outbound RTP sent from the room's hand-off, not pulled by one aiortc task per sender.

aiortc's ``RTCRtpSender`` runs a task per sender that awaits its track for one frame, packetises it,
builds an ``RtpPacket`` object per packet (reading the clock twice per packet) and sends it. For a
full outage that is 28 tasks woken ~1,150 times a second, and the same composed VP8 frame
packetised ten times. :class:`DirectRtpSender` takes the place of that task (``install`` replaces the
sender's ``_run_rtp`` before aiortc starts it): the room hands the payloads of a frame, packetised
once, to every receiver's sender in one call on the event loop, and each one writes its own header
(SSRC, sequence number, timestamp origin, ``mid`` and ``abs-send-time`` extensions, built once per
frame), protects and sends each packet.

What the rest of the aiortc sender reads is kept up to date: the sender report's NTP/RTP time and
counts, and a history of the packets sent, from which ``_retransmit`` (replaced too) answers NACKs,
with RTX when negotiated. It relies on private names of aiortc's ``RTCRtpSender`` (listed in
``_PRIVATE``; ``tests/test_media_outbound.py`` fails if they change).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Coroutine
from typing import Any, Protocol

from aiortc import clock
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import RtpPacket, wrap_rtx
from aiortc.utils import random32, uint16_add, uint32_add

HOOKED = ("_run_rtp", "_retransmit")  # the sender methods ``install`` replaces, per instance
RTP_HISTORY_SIZE = 128  # aiortc's: packets kept for retransmission
_P = "_RTCRtpSender__"
_PRIVATE = (
    "rtp_header_extensions_map",
    "mid",
    "rtp_started",
    "rtp_exited",
    "track",
    "ntp_timestamp",
    "rtp_timestamp",
    "octet_count",
    "packet_count",
    "rtx_payload_type",
    "rtx_sequence_number",
)


class Attachable(Protocol):
    """A track that can send through a :class:`DirectRtpSender` (``media.mixer``'s out tracks)."""

    def attach_direct(self, direct: DirectRtpSender | None) -> None: ...


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """One encoded VP8 frame as RTP payloads (aiortc's packetiser), once for every receiver."""
    return Vp8Encoder._packetize(frame, picture_id)


def _run_now(coro: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine that completes without suspending (aiortc's send path: a ``sendto``)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the send path suspended")


class DirectRtpSender:
    """Sends one aiortc sender's RTP from the caller's stack (the event loop)."""

    def __init__(self, sender: RTCRtpSender, payload_type: int) -> None:
        self._sender = sender
        self._dtls = sender.transport
        self._extensions_map = getattr(sender, _P + "rtp_header_extensions_map")
        self._mid = getattr(sender, _P + "mid")
        self._payload_type = payload_type
        self._sequence_number = random_sequence_number()
        self._timestamp_origin = random32()
        self._history: dict[int, bytes] = {}  # sequence number % size -> the packet before SRTP
        self.frames = 0  # frames sent

    @property
    def next_sequence_number(self) -> int:
        return self._sequence_number

    def send(self, payloads: list[bytes], timestamp: int) -> bool:
        """Send one frame (its payloads, timestamp in the codec's clock from the room's origin).
        ``False`` if the connection cannot send (not, or no longer, connected)."""
        if not payloads:
            return False
        rtp_timestamp = uint32_add(self._timestamp_origin, timestamp)
        template = RtpPacket(payload_type=self._payload_type, timestamp=rtp_timestamp, ssrc=self._sender._ssrc)
        template.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
        template.extensions.mid = self._mid
        header = bytearray(template.serialize(self._extensions_map))
        last = len(payloads) - 1
        sequence_number = self._sequence_number
        octets = 0
        try:
            for i, payload in enumerate(payloads):
                header[1] = self._payload_type | (0x80 if i == last else 0)
                struct.pack_into("!H", header, 2, sequence_number)
                packet = bytes(header) + payload
                self._history[sequence_number % RTP_HISTORY_SIZE] = packet
                _run_now(self._dtls._send_rtp(packet))
                octets += len(payload)
                sequence_number = uint16_add(sequence_number, 1)
        except ConnectionError:
            return False  # not connected (yet, or any more): the peer connection's state handles it
        finally:
            self._account(sequence_number, rtp_timestamp, octets)
        self.frames += 1
        return True

    def _account(self, sequence_number: int, rtp_timestamp: int, octets: int) -> None:
        packets = (sequence_number - self._sequence_number) & 0xFFFF
        self._sequence_number = sequence_number
        if not packets:
            return
        sender = self._sender
        setattr(sender, _P + "ntp_timestamp", clock.current_ntp_time())
        setattr(sender, _P + "rtp_timestamp", rtp_timestamp)
        setattr(sender, _P + "octet_count", getattr(sender, _P + "octet_count") + octets)
        setattr(sender, _P + "packet_count", getattr(sender, _P + "packet_count") + packets)

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a NACK as aiortc's ``_retransmit`` does: the packet again, wrapped in RTX if
        negotiated."""
        data = self._history.get(sequence_number % RTP_HISTORY_SIZE)
        if data is None or struct.unpack_from("!H", data, 2)[0] != sequence_number:
            return
        sender = self._sender
        rtx_payload_type = getattr(sender, _P + "rtx_payload_type")
        if rtx_payload_type is not None:
            rtx_sequence_number = getattr(sender, _P + "rtx_sequence_number")
            packet = wrap_rtx(
                RtpPacket.parse(data, self._extensions_map),
                payload_type=rtx_payload_type,
                sequence_number=rtx_sequence_number,
                ssrc=sender._rtx_ssrc,
            )
            setattr(sender, _P + "rtx_sequence_number", uint16_add(rtx_sequence_number, 1))
            data = packet.serialize(self._extensions_map)
        await self._dtls._send_rtp(data)


def install(sender: RTCRtpSender, track: Attachable) -> None:
    """Send this sender's RTP through a :class:`DirectRtpSender` fed by ``track``'s room (call
    before the connection starts the sender)."""

    async def run_rtp(codec: Any) -> None:
        getattr(sender, _P + "rtp_started").set()
        direct = DirectRtpSender(sender, codec.payloadType)
        sender._retransmit = direct.retransmit  # type: ignore[method-assign]
        track.attach_direct(direct)
        try:
            await asyncio.Event().wait()  # until RTCRtpSender.stop() cancels this task
        except asyncio.CancelledError:
            pass
        finally:
            track.attach_direct(None)
            own_track = getattr(sender, _P + "track")
            if own_track is not None:
                own_track.stop()
                setattr(sender, _P + "track", None)
            getattr(sender, _P + "rtp_exited").set()

    sender._run_rtp = run_rtp  # type: ignore[method-assign]

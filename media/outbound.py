"""Outbound RTP sent from the room's hand-off, not pulled by one aiortc task per sender.

aiortc's ``RTCRtpSender`` runs a task per sender that awaits its track for one frame, packetises it,
builds an ``RtpPacket`` per packet and sends it: for a full outage, 28 tasks woken over a thousand
times a second, and the same composed VP8 frame packetised once per receiver. :class:`DirectRtpSender`
takes the place of that task (``install`` replaces it before aiortc starts it): the room hands the
payloads of a frame, packetised once, to every receiver's sender in one call on the event loop, and
each one writes its own header (SSRC, sequence number, timestamp origin, ``mid`` and
``abs-send-time``, built once per frame), protects and sends each packet.

What the rest of the aiortc sender reads is kept up to date (the sender report's times and counts),
and NACKs are answered from a history of the packets sent, with RTX when negotiated. The aiortc
internals used are reached through ``media.aiortc_compat``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Coroutine
from typing import Any, Protocol

from aiortc import clock
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import RtpPacket, wrap_rtx
from aiortc.utils import random32, uint16_add, uint32_add

from media import aiortc_compat

RTP_HISTORY_SIZE = 128  # aiortc's: packets kept for retransmission


class Attachable(Protocol):
    """A track that can send through a :class:`DirectRtpSender` (``media.tracks``)."""

    def attach_direct(self, direct: DirectRtpSender | None) -> None: ...


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """One encoded VP8 frame as RTP payloads (aiortc's packetiser), once for every receiver."""
    return aiortc_compat.vp8_packetize(frame, picture_id)


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
        self._send_rtp = aiortc_compat.transport_send_rtp(sender.transport)
        self._extensions_map = aiortc_compat.header_extensions_map(sender)
        self._mid = aiortc_compat.sender_mid(sender)
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
        ssrc = aiortc_compat.sender_ssrc(self._sender)
        template = RtpPacket(payload_type=self._payload_type, timestamp=rtp_timestamp, ssrc=ssrc)
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
                _run_now(self._send_rtp(packet))
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
        if packets:
            aiortc_compat.record_sent(self._sender, rtp_timestamp, octets, packets)

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a NACK as aiortc's sender does: the packet again, wrapped in RTX if negotiated."""
        data = self._history.get(sequence_number % RTP_HISTORY_SIZE)
        if data is None or struct.unpack_from("!H", data, 2)[0] != sequence_number:
            return
        rtx = aiortc_compat.take_rtx_sequence_number(self._sender)
        if rtx is not None:
            rtx_payload_type, rtx_sequence_number = rtx
            packet = wrap_rtx(
                RtpPacket.parse(data, self._extensions_map),
                payload_type=rtx_payload_type,
                sequence_number=rtx_sequence_number,
                ssrc=aiortc_compat.sender_rtx_ssrc(self._sender),
            )
            data = packet.serialize(self._extensions_map)
        await self._send_rtp(data)


def install(sender: RTCRtpSender, track: Attachable) -> list[aiortc_compat.Hook]:
    """Send this sender's RTP through a :class:`DirectRtpSender` fed by ``track``'s room (call
    before the connection starts the sender). Returns the hooks to remove when the session ends."""

    async def run_rtp(codec: Any) -> None:
        aiortc_compat.mark_rtp_started(sender)
        direct = DirectRtpSender(sender, codec.payloadType)
        aiortc_compat.replace_retransmit(sender, direct.retransmit)
        track.attach_direct(direct)
        try:
            await asyncio.Event().wait()  # until RTCRtpSender.stop() cancels this task
        except asyncio.CancelledError:
            pass
        finally:
            track.attach_direct(None)
            aiortc_compat.end_rtp(sender)

    return [aiortc_compat.replace_run_rtp(sender, run_rtp), aiortc_compat.retransmit_hook(sender)]

"""media.outbound: an aiortc sender's RTP sent from the room's hand-off instead of its own task. Real
aiortc peer connections over loopback; the receiving side is aiortc's own, unmodified."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

from media import aiortc_compat, outbound
from media.mix_encoder import AUDIO_SAMPLES, OpusMixEncoder
from media.room import Room
from media.tracks import AudioOutTrack, VideoOutTrack
from tests.support.media_clients import pre_encode_vp8

pytestmark = pytest.mark.media


async def connected_pair(
    track: AudioOutTrack | VideoOutTrack,
) -> tuple[RTCPeerConnection, RTCPeerConnection, Any, Any]:
    """A node-side pc sending ``track`` through a direct sender, and a client receiving it."""
    node, client = RTCPeerConnection(), RTCPeerConnection()
    sender = node.addTransceiver(track, direction="sendrecv").sender
    outbound.install(sender, track)
    client.addTransceiver(track.kind, direction="recvonly")
    remote: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client.on("track", lambda t: remote.done() or remote.set_result(t))
    await client.setLocalDescription(await client.createOffer())
    await node.setRemoteDescription(client.localDescription)
    await node.setLocalDescription(await node.createAnswer())
    await client.setRemoteDescription(node.localDescription)
    remote_track = await asyncio.wait_for(remote, 5)
    for _ in range(100):
        if track._direct is not None:
            break
        await asyncio.sleep(0.05)
    assert track._direct is not None, "the sender never started"
    return node, client, sender, remote_track


async def test_direct_sender_carries_the_track_and_keeps_the_sender_accounts() -> None:
    track = AudioOutTrack()
    node, client, sender, remote_track = await connected_pair(track)
    try:
        encoder = OpusMixEncoder()
        t = np.arange(AUDIO_SAMPLES) / 48000
        tone = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)

        async def play() -> None:
            for n in range(50):
                track.deliver(encoder.encode(tone, n * AUDIO_SAMPLES))
                await asyncio.sleep(0.02)

        player = asyncio.ensure_future(play())
        levels = []
        for _ in range(40):
            frame = await asyncio.wait_for(remote_track.recv(), 2)
            levels.append(float(np.sqrt(np.mean(frame.to_ndarray().astype(float) ** 2))))
        await player
        assert max(levels[10:]) > 1000  # the tone arrives, decoded by aiortc's own receiver

        stats = await sender.getStats()
        sent = next(s for s in stats.values() if s.type == "outbound-rtp")
        assert sent.packetsSent == 50 and sent.bytesSent > 50 * 20

    finally:
        await client.close()
        await node.close()
    assert track._direct is None  # the sender stopped: the track no longer sends through it
    assert track.readyState == "ended"


async def rtx_packets_received(pc: RTCPeerConnection, rtx_ssrc: int) -> int:
    """Packets the client received on the RTX stream (aiortc reports each remote SSRC it has seen)."""
    return sum(
        s.packetsReceived for s in (await pc.getStats()).values() if s.type == "inbound-rtp" and s.ssrc == rtx_ssrc
    )


async def test_direct_video_frames_decode_and_nacks_are_answered_with_rtx() -> None:
    """Shared payloads (packetised once) sent through a video sender reach aiortc's decoder whole; a
    NACK for a packet sent is answered (RTX, as negotiated), one never sent is not. The NACK reaches the
    sender as aiortc's transport hands it RTCP."""
    room = Room("c-outbound")
    track = VideoOutTrack(room)
    node, client, sender, remote_track = await connected_pair(track)
    try:
        assert room.video.keyframe_due  # a starting direct sender asks the shared encoder for a keyframe
        clip = pre_encode_vp8(320, 240, 10, 30)

        async def play() -> None:
            for n, frame in enumerate(clip):
                assert track.send_direct(outbound.vp8_payloads(frame, n), n * 3000, [])
                await asyncio.sleep(0.03)

        player = asyncio.ensure_future(play())
        decoded = [await asyncio.wait_for(remote_track.recv(), 3) for _ in range(8)]
        await player
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}

        direct = track._direct
        assert direct is not None and direct.frames == len(clip)
        rtx_ssrc = aiortc_compat.sender_rtx_ssrc(sender)
        assert not await rtx_packets_received(client, rtx_ssrc)
        sent, never_sent = (direct.next_sequence_number - 1) & 0xFFFF, (direct.next_sequence_number + 500) & 0xFFFF
        nack = RtcpRtpfbPacket(
            fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=aiortc_compat.sender_ssrc(sender), lost=[sent, never_sent]
        )
        await aiortc_compat.handle_rtcp(sender, nack)
        got = 0
        for _ in range(40):
            got = await rtx_packets_received(client, rtx_ssrc)
            if got:
                break
            await asyncio.sleep(0.05)
        assert got == 1
    finally:
        await client.close()
        await node.close()
        await room.close()
    assert track._direct is None

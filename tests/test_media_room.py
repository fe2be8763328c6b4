"""media.room: a room starts its threads with its first members, delivers what its threads make, takes
over its members' inbound streams, and ends everything when it closes. Real libopus, real aiortc
receivers."""

from __future__ import annotations

import asyncio
import fractions
import threading

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from media import aiortc_compat, inbound
from media.members import Member
from media.mix_encoder import AUDIO_SAMPLES
from media.room import Room
from media.tracks import AudioOutTrack, VideoOutTrack

pytestmark = pytest.mark.media


def room_threads(room: Room) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(room.prefix)]


async def test_audio_thread_delivers_to_the_tracks() -> None:
    room = Room("c-test")
    try:
        member, other = (Member(pid=pid, display_name=pid, kind="audio") for pid in ("a", "b"))
        for m in (member, other):
            m.audio_out = AudioOutTrack()
            room.add(m)  # the first starts the audio thread
        t = np.arange(AUDIO_SAMPLES) / 48000
        for _ in range(10):
            member.audio_buf.append((8000 * np.sin(2 * np.pi * 400 * t)).astype(np.int32))
            member.audio_buffered += AUDIO_SAMPLES
        assert member.audio_out is not None
        packet = await asyncio.wait_for(member.audio_out.recv(), 2)
        assert packet.time_base == fractions.Fraction(1, 48000) and bytes(packet)
    finally:
        await room.close()


async def test_close_ends_the_threads_and_the_tracks() -> None:
    room = Room("conf-abcdef")
    member = Member(pid="v", display_name="V", kind="video")
    member.audio_out, member.video_out = AudioOutTrack(), VideoOutTrack(room)
    room.add(member)
    assert sorted(room_threads(room)) == ["mcu-abcdef-audio", "mcu-abcdef-compose"]
    await room.close()
    assert room.closed and not room.members and member.gone
    assert member.audio_out.readyState == member.video_out.readyState == "ended"
    assert room_threads(room) == []


async def test_inbound_streams_are_tapped_and_an_audio_participants_camera_dropped() -> None:
    pc = RTCPeerConnection()
    room = Room("c-inbound")
    try:
        audio_rx = pc.addTransceiver("audio", direction="recvonly").receiver
        camera_rx = pc.addTransceiver("video", direction="recvonly").receiver
        phone = Member(pid="p", display_name="P", kind="audio")
        room.attach_inbound(phone, audio_rx, "audio")
        room.attach_inbound(phone, camera_rx, "video")
        assert isinstance(aiortc_compat.decoder_queue(audio_rx), inbound.DecodeTap)
        assert isinstance(aiortc_compat.decoder_queue(camera_rx), inbound.DecodeTap)
        assert phone.inbound == ["audio", "video"] and not phone.sends_video
        assert room_threads(room) == []  # no decoder thread for a camera nobody sees
    finally:
        await room.close()
        await pc.close()


def test_the_production_constructors_have_no_benchmark_switch() -> None:
    """Issue 15: the benchmark's switches (latency probes, decoder threads, per-receiver video, RTP
    sending) live in benchmarks/media_node_bench.py, not in the node's or the room's constructor."""
    import inspect

    from media.node import MediaNode

    assert list(inspect.signature(Room.__init__).parameters) == ["self", "conference_id", "fps"]
    assert list(inspect.signature(MediaNode.__init__).parameters) == ["self", "settings", "url", "node_id", "fps"]
    assert not hasattr(Room, "video_pipeline")

"""media.inbound: the tap in place of aiortc's decoder queue, audio decoded to mono, the room's video
decoder threads and their overload rule. Real codecs (libopus, libvpx) and real aiortc receivers."""

from __future__ import annotations

import fractions
import threading
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.codecs import PCMU_CODEC, get_decoder
from aiortc.codecs.g711 import PcmuEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from media import aiortc_compat, inbound
from media.inbound import MAX_BACKLOG, AudioIngest, DecodeTap, TapTooLate, VideoDecoders, is_vp8_keyframe
from media.members import Member
from tests.support.media_clients import pre_encode_vp8, until

pytestmark = pytest.mark.media


OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def opus_packets(freq: float, amplitude: int, count: int, channels: str = "mono") -> list[bytes]:
    codec: Any = av.CodecContext.create("libopus", "w")
    codec.bit_rate, codec.format, codec.layout, codec.sample_rate = 32_000, "s16", channels, 48000
    codec.time_base = fractions.Fraction(1, 48000)
    out = []
    n_ch = 2 if channels == "stereo" else 1
    for n in range(count):
        t = (np.arange(960) + n * 960) / 48000
        mono = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, n_ch).reshape(1, -1), format="s16", layout=channels)
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, codec.time_base
        out.extend(bytes(p) for p in codec.encode(frame))
    return out


@pytest.fixture
async def receivers() -> Any:
    """Real, not yet started receivers of a peer connection (what the node's track event sees)."""
    pc = RTCPeerConnection()
    audio = pc.addTransceiver("audio", direction="recvonly").receiver
    video = pc.addTransceiver("video", direction="recvonly").receiver
    yield audio, video
    await pc.close()


def video_sender(
    receiver: RTCRtpReceiver, clip_shape: tuple[int, int, int], threads: int
) -> tuple[list[bytes], VideoDecoders, Member, Any]:
    """A VP8 clip (width, height, frames), a room's decoders and a video member fed through them."""
    clip = pre_encode_vp8(*clip_shape, 30)
    decoders = VideoDecoders("test", threads=threads)
    member = Member(pid="v", display_name="V", kind="video")
    return clip, decoders, member, decoders.feed_for(member, receiver)


def test_tap_delivers_until_the_receiver_stops() -> None:
    got: list[tuple[Any, Any]] = []
    tap = DecodeTap(lambda codec, frame: got.append((codec, frame)))
    tap.put((OPUS, "frame-1"))
    assert got == [(OPUS, "frame-1")]

    ended = threading.Event()

    def aiortc_decoder_thread() -> None:  # what aiortc's idle decoder thread does: get() until None
        assert tap.get() is None
        ended.set()

    worker = threading.Thread(target=aiortc_decoder_thread)
    worker.start()
    assert not ended.wait(0.1)  # it sleeps while the receiver runs
    tap.put(None)  # RTCRtpReceiver.__stop_decoder
    worker.join(5)
    assert ended.is_set() and tap.closed
    tap.put((OPUS, "late"))
    assert len(got) == 1  # nothing is delivered after the stop


async def test_install_replaces_the_decoder_queue_and_refuses_a_started_receiver(receivers: Any) -> None:
    audio, video = receivers
    tap = inbound.install(audio, lambda codec, frame: None)
    assert aiortc_compat.decoder_queue(audio) is tap
    setattr(video, aiortc_compat.DECODER_THREAD, threading.Thread(target=lambda: None))  # as if started
    with pytest.raises(TapTooLate):
        inbound.install(video, lambda codec, frame: None)


def test_audio_ingest_decodes_opus_to_mono_48k() -> None:
    member = Member(pid="p1", display_name="A", kind="audio")
    ingest = AudioIngest(member)
    for data in opus_packets(440, 8000, 25, channels="stereo"):
        ingest(OPUS, JitterFrame(data, 0))
    assert member.audio_buffered == sum(len(c) for c in member.audio_buf)
    samples = np.concatenate(list(member.audio_buf))
    assert samples.dtype == np.int32 and len(samples) == inbound.MAX_AUDIO_BUFFERED  # newest 120 ms kept
    tail = samples[-4800:].astype(float)
    spectrum = np.abs(np.fft.rfft(tail))
    assert abs(np.argmax(spectrum) * 48000 / len(tail) - 440) < 10
    assert 3000 < np.sqrt(np.mean(tail**2)) < 8000  # the tone's level survives the downmix


def test_audio_ingest_bounds_its_buffer_and_takes_g711() -> None:
    member = Member(pid="p2", display_name="B", kind="audio")
    ingest = AudioIngest(member)
    for data in opus_packets(300, 4000, 30):
        ingest(OPUS, JitterFrame(data, 0))
    assert member.audio_buffered <= inbound.MAX_AUDIO_BUFFERED  # oldest audio dropped: bounded jitter
    # PCMU from a phone gateway: 8 kHz, resampled to 48 kHz mono
    other = Member(pid="p3", display_name="C", kind="audio")
    g711 = AudioIngest(other)
    encoder = PcmuEncoder()
    t = np.arange(960) / 48000
    for n in range(3):  # the encoder's resampler holds the first 20 ms back
        frame = av.AudioFrame.from_ndarray(
            (4000 * np.sin(2 * np.pi * 400 * t)).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        payloads, _ = encoder.encode(frame)
        for payload in payloads:
            g711(PCMU_CODEC, JitterFrame(payload, 0))
    assert other.audio_buffered == 2 * 960  # two 20 ms frames of 8 kHz, as 48 kHz samples


def test_audio_ingest_skips_a_corrupt_packet() -> None:
    member = Member(pid="p4", display_name="D", kind="audio")
    ingest = AudioIngest(member)
    ingest(OPUS, JitterFrame(b"\xff" * 3, 0))  # not a valid Opus packet: dropped, no exception
    ingest(OPUS, JitterFrame(opus_packets(500, 4000, 1)[0], 0))
    assert member.audio_buffered in (0, 960)


async def test_video_decoders_keep_the_latest_picture_and_its_arrival(receivers: Any) -> None:
    clip, decoders, member, deliver = video_sender(receivers[1], (320, 240, 10), threads=2)
    assert is_vp8_keyframe(clip[0]) and not any(is_vp8_keyframe(f) for f in clip[1:])
    try:
        before = time.monotonic()
        for data in clip:
            deliver(VP8, JitterFrame(data, 0))
        await until(lambda: member.frame_seq == len(clip), 5)
        assert member.frame is not None and (member.frame.width, member.frame.height) == (320, 240)
        assert before <= member.frame_at <= time.monotonic()  # counted from arrival, not from decoding
    finally:
        decoders.close()
    assert not any(t.is_alive() for t in decoders._threads)


async def test_an_overloaded_decoder_drops_to_the_next_keyframe_and_asks_for_one(receivers: Any) -> None:
    clip, decoders, member, deliver = video_sender(receivers[1], (640, 480, 60), threads=1)
    error = aiortc_compat.decode_error_flag(receivers[1])
    assert error is not None
    try:
        for data in clip:  # 60 frames at once: far faster than one thread decodes 640x480
            deliver(VP8, JitterFrame(data, 0))
        backlog = member.decode_backlog
        assert backlog.skipping and backlog.dropped > 0
        assert backlog.queued + backlog.dropped == len(clip)  # every frame either queued or dropped
        assert backlog.queued < len(clip) - MAX_BACKLOG
        assert error.is_set()  # the receiver sends a PLI with its next packet
        # every queued frame decoded and counted (``done`` counts a frame when its decode starts, so
        # waiting on it alone let the last picture land after ``seq`` was read)
        await until(lambda: member.frame_seq == backlog.queued, 10)
        seq = member.frame_seq
        dropped = backlog.dropped
        deliver(VP8, JitterFrame(clip[5], 0))  # still no keyframe: dropped
        assert backlog.skipping and backlog.dropped == dropped + 1
        deliver(VP8, JitterFrame(clip[0], 0))  # the keyframe: decoding resumes
        assert not backlog.skipping
        await until(lambda: member.frame_seq == seq + 1, 5)
    finally:
        decoders.close()


async def test_decoders_skip_a_member_that_left(receivers: Any) -> None:
    clip, decoders, member, deliver = video_sender(receivers[1], (160, 120, 5), threads=1)
    try:
        member.gone = True
        for data in clip:
            deliver(VP8, JitterFrame(data, 0))
        await until(lambda: member.decode_backlog.done == len(clip), 5)
    finally:
        decoders.close()  # joins the worker: whatever it would have decoded is stored by now
    assert member.frame_seq == 0 and member.frame is None


def test_vp8_decoder_gives_libvpx_pictures_and_other_codecs_keep_aiortc_decoders() -> None:
    """FFmpeg's VP8 decoder (cheaper) in place of aiortc's libvpx one: the same pictures, bit for bit,
    through a stream of inter frames after its keyframe; H.264 keeps aiortc's decoder."""
    clip = pre_encode_vp8(320, 240, 45, 30)
    ours = inbound.video_decoder(VP8)
    assert isinstance(ours, inbound.Vp8Decoder)
    theirs = get_decoder(VP8)
    compared = 0
    for n, data in enumerate(clip):
        frame = JitterFrame(data=data, timestamp=n * 3000)
        got, want = ours.decode(frame), theirs.decode(frame)
        assert len(got) == len(want) == 1
        assert (got[0].width, got[0].height) == (320, 240)
        for plane in range(3):
            assert bytes(got[0].planes[plane]) == bytes(want[0].planes[plane]), (n, plane)
        compared += 1
    assert compared == 45
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    assert type(inbound.video_decoder(h264)) is type(get_decoder(h264))

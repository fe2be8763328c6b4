"""Inbound media without aiortc's per-receiver decoder threads.

aiortc's ``RTCRtpReceiver`` hands each reassembled frame, through a queue, to a decoder thread of its
own, and decoded frames come back to the event loop. For a full outage that is dozens of threads
waking over a thousand times a second, each wake-up a GIL hand-off the event loop (which does every
packet's SRTP/RTP work) waits for. A :class:`DecodeTap` takes the place of that queue (the receiver
keeps its jitter buffer, NACK, PLI and RTCP; only where the encoded frame goes changes):

- audio goes, undecoded, to the room's audio thread, which decodes it into the member's mixing buffer
  at its next 20 ms tick (:class:`AudioIngest`);
- video goes to the room's :class:`VideoDecoders`: a few threads (each sender pinned to one, so each
  stream is decoded in order) that store the latest picture on the member for the compositor;
- anything not wanted (an audio participant's camera) is dropped undecoded.

aiortc's own decoder thread is still started by ``receive()`` but sleeps on the tap until the
receiver stops; then it ends the track as before, so close paths are unchanged. Figures: docs/MEDIA.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc.codecs import get_decoder
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from media import aiortc_compat, opus
from media.members import Member
from media.stats import LatencyStats
from media.threads import name_os_thread

log = logging.getLogger("backupplus.media.inbound")

MAX_AUDIO_BUFFERED = opus.FRAME_SAMPLES * 6  # 120 ms: beyond that the oldest audio is dropped (bounded jitter)

# what a video sender's tap hands its decoder thread: who, codec, frame, receiver, arrival time
_Job = tuple[Member, Any, Any, RTCRtpReceiver, float]


MAX_BACKLOG = 15  # video frames waiting for one sender's decoder: half a second at 30 fps


class Vp8Decoder:
    """FFmpeg's own VP8 decoder, on the calling thread only.

    aiortc decodes VP8 with libvpx; FFmpeg's decoder gives the same pictures (bit-exact: VP8
    decoding is normative; ``tests/test_media_inbound.py`` compares them) for less CPU."""

    def __init__(self) -> None:
        self.codec: Any = av.CodecContext.create("vp8", "r")
        self.codec.thread_count = 1  # the room's decoder threads are the parallelism; no pool per stream

    def decode(self, encoded: Any) -> list[Any]:
        return self.codec.decode(av.Packet(encoded.data))  # type: ignore[no-any-return]


def video_decoder(codec: Any) -> Any:
    """The decoder of one inbound video stream: :class:`Vp8Decoder` for VP8, aiortc's otherwise."""
    if codec.name == "VP8":
        return Vp8Decoder()
    return get_decoder(codec)


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame."""
    return len(data) >= 3 and not data[0] & 1


class TapTooLate(RuntimeError):
    """The receiver's decoder thread already runs on aiortc's own queue."""


class DecodeTap:
    """Duck-types the ``queue.Queue`` an ``RTCRtpReceiver`` feeds its decoder thread with."""

    def __init__(self, deliver: Callable[[Any, Any], None]) -> None:
        self._deliver = deliver
        self._closed = threading.Event()

    # called by the receiver (event loop) with (codec, JitterFrame) for each reassembled frame, and
    # with None when it stops
    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._closed.set()
            return
        if not self._closed.is_set():
            self._deliver(*item)

    # called by aiortc's (now idle) decoder thread: wait for the receiver to stop, then let the
    # thread end the track as usual
    def get(self) -> None:
        self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


def receiver_of(pc: Any, track: Any) -> RTCRtpReceiver | None:
    """The receiver of a remote ``track`` (what a peer connection's ``track`` event gives)."""
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track:
            return transceiver.receiver  # type: ignore[no-any-return]
    return None


def install(receiver: RTCRtpReceiver, deliver: Callable[[Any, Any], None]) -> DecodeTap:
    """Put a tap in place of ``receiver``'s decoder queue; call before the receiver starts."""
    if aiortc_compat.decoder_started(receiver):
        raise TapTooLate("the receiver's decoder already started")
    tap = DecodeTap(deliver)
    aiortc_compat.replace_decoder_queue(receiver, tap)
    return tap


def drop(codec: Any, encoded: Any) -> None:
    """Where an unwanted inbound stream's frames go: nowhere, undecoded."""


def flag_decode_error(receiver: RTCRtpReceiver) -> None:
    """What aiortc's decoder does on a bad frame: the receiver sends a PLI with its next packet."""
    event = aiortc_compat.decode_error_flag(receiver)
    if event is not None:
        event.set()


class AudioIngest:
    """Decodes one participant's audio straight into its mixing buffer (called on the room's audio
    thread, which alone touches that buffer)."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self._opus: Any = None
        self._other: Any = None  # aiortc's decoder for anything but Opus (G.711)
        self._other_name = ""

    def __call__(self, codec: Any, encoded: Any) -> None:
        try:
            if codec.name.lower() == "opus":
                mono = self._decode_opus(encoded.data)
            else:
                mono = self._decode_other(codec, encoded)
        except (av.FFmpegError, opus.OpusError, ValueError) as exc:
            log.debug("audio frame of %s not decoded: %s", self.member.pid, exc)
            return
        if mono is None or not len(mono):
            return
        member = self.member
        member.audio_buf.append(mono)
        member.audio_buffered += len(mono)
        while member.audio_buffered > MAX_AUDIO_BUFFERED:
            member.audio_buffered -= len(member.audio_buf.popleft())

    def _decode_opus(self, data: bytes) -> np.ndarray | None:
        if self._opus is None:
            self._opus = opus.Decoder()  # mono: libopus downmixes a stereo stream; the mix is mono
        return self._opus.decode(data).astype(np.int32)

    def _decode_other(self, codec: Any, encoded: Any) -> np.ndarray | None:
        if self._other is None or self._other_name != codec.name:
            self._other, self._other_name = get_decoder(codec), codec.name
        chunks = [to_mono_48k(frame) for frame in self._other.decode(encoded)]
        if not chunks:
            return None
        return np.concatenate(chunks)


def to_mono_48k(frame: Any) -> np.ndarray:
    """Any decoded audio frame as mono int32 samples at 48 kHz (channels averaged, resampled)."""
    data = frame.to_ndarray()
    if frame.format.is_planar or data.shape[0] > 1:
        mono = data.astype(np.int32).mean(axis=0)
    else:
        channels = frame.layout.nb_channels
        mono = data.reshape(-1, channels).astype(np.int32).sum(axis=1) // channels
    if frame.sample_rate != opus.SAMPLE_RATE:
        n = int(len(mono) * opus.SAMPLE_RATE / frame.sample_rate)
        mono = np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono)
    return np.asarray(mono, dtype=np.int32)


class VideoDecoders:
    """A room's video decoding: ``threads`` worker threads, each sender pinned to one of them.

    A worker stores the latest picture of a sender on its member (``frame``, ``frame_seq``,
    ``frame_at``); the compositor reads it at its own rate. A member that left is skipped."""

    def __init__(self, name: str, threads: int = 2, stats: LatencyStats | None = None) -> None:
        self.stats = stats
        self._queues: list[queue.SimpleQueue[_Job | None]] = []
        self._threads: list[threading.Thread] = []
        self._assigned = 0
        for i in range(max(1, threads)):
            q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            t = threading.Thread(target=self._work, args=(q,), name=f"{name}-vdec{i}", daemon=True)
            self._queues.append(q)
            self._threads.append(t)
            t.start()

    def feed_for(self, member: Member, receiver: RTCRtpReceiver) -> Callable[[Any, Any], None]:
        """The ``deliver`` callable of a video sender's tap: hands its frames to its worker.

        Overload: when a sender's frames wait more than ``MAX_BACKLOG`` deep (the CPU cannot keep
        up), its backlog is not let grow: frames are dropped up to the next keyframe, which is asked
        for at once (PLI), as a receiver does after a loss."""
        q = self._queues[self._assigned % len(self._queues)]
        self._assigned += 1
        put = q.put
        backlog = member.decode_backlog

        def deliver(codec: Any, encoded: Any) -> None:
            if backlog.skipping:
                if not is_vp8_keyframe(encoded.data):
                    backlog.dropped += 1
                    return
                backlog.skipping = False
            if backlog.queued - backlog.done >= MAX_BACKLOG:
                backlog.skipping = True
                backlog.dropped += 1
                flag_decode_error(receiver)
                return
            backlog.queued += 1
            put((member, codec, encoded, receiver, time.monotonic()))

        return deliver

    def _work(self, q: queue.SimpleQueue[_Job | None]) -> None:
        name_os_thread("mcu-vdecode")
        decoders: dict[Member, tuple[str, Any]] = {}  # member -> (codec name, its decoder)
        while True:
            item = q.get()
            if item is None:
                break
            member, codec, encoded, receiver, arrived = item
            member.decode_backlog.done += 1
            if member.gone:
                decoders.pop(member, None)
                continue
            entry = decoders.get(member)
            if entry is None or entry[0] != codec.name:
                entry = (codec.name, video_decoder(codec))
                decoders[member] = entry
            try:
                frames = entry[1].decode(encoded)
            except av.FFmpegError as exc:
                log.debug("video frame of %s not decoded: %s", member.pid, exc)
                flag_decode_error(receiver)
                continue
            for frame in frames:
                member.frame = frame  # type: ignore[assignment]  # a VP8 decoder yields VideoFrames
                member.frame_at = arrived  # the latency probe counts from the frame's arrival
                member.frame_seq += 1
                if self.stats is not None:
                    self.stats.received += 1
        decoders.clear()

    def close(self) -> None:
        """Stop the workers (blocks until they end: call from a thread, or when they are idle)."""
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()
        self._threads.clear()

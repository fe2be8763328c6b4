"""aiortc clients for the media plane's tests and benchmark: tone and colour senders, pre-encoded VP8,
a client that records what it receives, and helpers that seed an outage and admit participants through
the port ledger as the broker does. Test support: not part of the installed package."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from broker import ids
from quotas import keys

AUDIO_RATE = 48000
VIDEO_TB = fractions.Fraction(1, 90000)

# Distinct, saturated colours as (Y, U, V), and a tone per participant.
COLOURS = {
    "red": (81, 90, 240),
    "green": (145, 54, 34),
    "blue": (41, 240, 110),
    "yellow": (210, 16, 146),
}


class Pacer:
    """Hands out frame numbers at a steady rate, waiting until each one is due (real-time clients)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._n = 0
        self._start: float | None = None

    async def next(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        n, self._n = self._n, self._n + 1
        return n


class ToneTrack(MediaStreamTrack):
    """A sine tone, 20 ms s16 stereo frames paced in real time."""

    kind = "audio"

    def __init__(self, freq: float, amplitude: int = 8000) -> None:
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self._pacer = Pacer(AUDIO_RATE / 960)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        t = (np.arange(960) + n * 960) / AUDIO_RATE
        mono = (self.amplitude * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = n * 960
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class ColourTrack(MediaStreamTrack):
    """A solid-colour picture of any size (e.g. 1280x720), at ``fps``."""

    kind = "video"

    def __init__(
        self, yuv: tuple[int, int, int], width: int = 1280, height: int = 720, fps: float = 10
    ) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        y, u, v = yuv
        buf = np.empty((height * 3 // 2, width), dtype=np.uint8)
        buf[:height] = y
        buf[height : height * 5 // 4] = u
        buf[height * 5 // 4 :] = v
        self._buf = buf
        self._pacer = Pacer(fps)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        frame = av.VideoFrame.from_ndarray(self._buf, format="yuv420p")
        frame.pts = int(n * 90000 / self.fps)
        frame.time_base = VIDEO_TB
        return frame


def encode_vp8(
    pictures: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: float,
    *,
    bitrate: int = 500_000,
    gop_size: int,
    cbr: bool = False,
) -> list[bytes]:
    """yuv420p pictures (``height * 3 // 2`` rows of ``width``) encoded once with libvpx in realtime,
    as a browser would (the first a keyframe); ``cbr`` holds the rate at ``bitrate``."""
    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, int(fps))
    codec.gop_size = gop_size
    options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0"}
    if cbr:
        options.update(minrate=str(bitrate), maxrate=str(bitrate), bufsize=str(bitrate))
    codec.options = options
    out = []
    for i, buf in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = i
        if i == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out.append(b"".join(bytes(p) for p in codec.encode(frame)))
    return out


def pre_encode_vp8(
    width: int, height: int, frames: int, fps: float, seed: int = 0, bitrate: int = 500_000
) -> list[bytes]:
    """A moving-texture clip encoded once (first frame a keyframe, then one every ``frames``)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height * 3 // 2 + 64, width + 64), dtype=np.uint8)

    def picture(i: int) -> np.ndarray:
        shift = (i * 3) % 64
        return np.ascontiguousarray(base[shift : shift + height * 3 // 2, shift : shift + width])

    return encode_vp8((picture(i) for i in range(frames)), width, height, fps, bitrate=bitrate, gop_size=frames)


class PacketTrack(MediaStreamTrack):
    """Loops a pre-encoded VP8 clip as ``av.Packet`` (the sender only packetises: cheap clients)."""

    kind = "video"

    def __init__(self, packets: list[bytes], fps: float) -> None:
        super().__init__()
        self.packets, self.fps = packets, fps
        self._pacer = Pacer(fps)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.next()
        packet = av.Packet(self.packets[n % len(self.packets)])
        packet.pts = int(n * 90000 / self.fps)
        packet.time_base = VIDEO_TB
        return packet


OfferFn = Callable[[dict[str, Any], str, str], Awaitable[dict[str, str]]]


class Client:
    """One participant's browser stand-in: sends what it is given, records what it receives."""

    def __init__(
        self,
        participant: dict[str, Any],
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        want_video: bool = True,
        decode_video: bool = True,
        keep_audio_s: float = 2.0,
        config: RTCConfiguration | None = None,
    ) -> None:
        self.participant = participant
        self.pc = RTCPeerConnection(config or RTCConfiguration(iceServers=[]))
        self.audio_chunks: deque[np.ndarray] = deque(maxlen=int(keep_audio_s * 50))
        self.video_frames = 0
        self.video_first_at: float | None = None
        self.video_last_at: float | None = None
        self.max_height = 0
        self.last_frame: av.VideoFrame | None = None
        self.audio_tracks = 0
        self.video_tracks = 0
        self.answer_sdp = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.addTransceiver(audio or "audio", direction="sendrecv" if audio else "recvonly")
        if video is not None or want_video:
            self.pc.addTransceiver(video or "video", direction="sendrecv" if video else "recvonly")
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.audio_tracks += 1
            self._tasks.append(asyncio.create_task(self._read_audio(track)))
        else:
            self.video_tracks += 1
            self._tasks.append(asyncio.create_task(self._read_video(track)))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                data = frame.to_ndarray().reshape(-1, 2).astype(np.int32).mean(axis=1)
                self.audio_chunks.append(data)
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def _read_video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                now = time.monotonic()
                self.video_frames += 1
                self.video_first_at = self.video_first_at or now
                self.video_last_at = now
                self.max_height = max(self.max_height, frame.height)
                self.last_frame = frame
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def connect(self, offer_fn: OfferFn) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await offer_fn(self.participant, self.pc.localDescription.sdp, "offer")
        self.answer_sdp = answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def wait_connected(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline or self.pc.connectionState in ("failed", "closed"):
                raise TimeoutError(f"{self.participant['id']}: {self.pc.connectionState}")
            await asyncio.sleep(0.05)

    def audio_spectrum(self, seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(frequencies, magnitudes) of the last ``seconds`` of received audio."""
        chunks = list(self.audio_chunks)[-int(seconds * 50) :]
        if not chunks:
            return np.zeros(1), np.zeros(1)
        sig = np.concatenate(chunks).astype(float)
        mag = np.abs(np.fft.rfft(sig * np.hanning(len(sig)))) / len(sig)
        return np.fft.rfftfreq(len(sig), 1 / AUDIO_RATE), mag

    def tone_level(self, freq: float, seconds: float = 1.0) -> float:
        freqs, mag = self.audio_spectrum(seconds)
        band = (freqs > freq - 15) & (freqs < freq + 15)
        return float(mag[band].max()) if band.any() else 0.0

    def tone_prominence(self, freq: float, seconds: float = 1.0) -> float:
        """How far a tone at ``freq`` stands above the audio around it: the peak within 15 Hz over the
        median level 30-200 Hz away. A tone that is there reads 10 and more (10-50 measured here for
        the other participants' tones under CPU load); broadband noise (concealment of late packets)
        that happens to have energy at ``freq`` reads ~1-4."""
        freqs, mag = self.audio_spectrum(seconds)
        peak = mag[(freqs > freq - 15) & (freqs < freq + 15)]
        near = mag[(abs(freqs - freq) > 30) & (abs(freqs - freq) < 200)]
        if not peak.size or not near.size:
            return 0.0
        return float(peak.max() / max(float(np.median(near)), 1e-9))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()


def frame_has_colour(
    frame: av.VideoFrame, yuv: tuple[int, int, int], tol: int = 28, min_fraction: float = 0.01
) -> bool:
    """Whether at least ``min_fraction`` of the picture is close to the colour ``yuv``."""
    f = frame.reformat(format="yuv420p")
    arr = f.to_ndarray()
    h, w = f.height, f.width
    y = arr[:h:2, ::2].astype(int)[: h // 2, : w // 2]
    u = arr[h : h * 5 // 4].reshape(h // 2, w // 2).astype(int)
    v = arr[h * 5 // 4 :].reshape(h // 2, w // 2).astype(int)
    close = (abs(y - yuv[0]) < tol) & (abs(u - yuv[1]) < tol) & (abs(v - yuv[2]) < tol)
    return bool(close.mean() >= min_fraction)


async def seed_conference(ledger: Any, audio: int = 8, video: int = 10) -> tuple[str, str]:
    """An active outage with one conference, written through the port ledger (as the broker does)."""
    oid = ids.new_outage_id()
    cid = ids.new_conference_id(oid)
    await ledger.open_outage(oid, {"id": oid, "state": "active"}, audio, video)
    await ledger.redis.sadd(keys.ACTIVE_OUTAGES, oid)  # as the broker does: the lease sweeper walks it
    assert await ledger.add_conference(oid, cid, {"id": cid, "outage": oid, "title": "test"}) == "ok"
    return oid, cid


async def admit(
    ledger: Any, oid: str, cid: str, name: str, kind: str = "video", ttl_ms: int = 30_000
) -> dict[str, Any]:
    """Admits a participant (one port) and returns the participant doc the router is given."""
    pid = ids.new_participant_id(oid)
    doc = {"id": pid, "conference": cid, "outage": oid, "display_name": name}
    from quotas.ledger import RateLimit

    res = await ledger.admit(oid, cid, pid, kind, True, ttl_ms, doc, rate=RateLimit(burst=10_000, per_s=10_000))
    if res.status != "granted":
        raise RuntimeError(f"admit {name}: {res}")
    return {**doc, "kind": res.kind, "requested_kind": kind, "state": "admitted"}


async def until(cond: Any, timeout: float, step: float = 0.05) -> float:
    """Waits until ``cond()`` (sync or async) is true; returns the time it took. Fails after ``timeout``."""
    start = time.monotonic()
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)

"""One conference's MCU: mix-minus audio and one composed VP8 grid encoded once for every receiver.

Audio: every participant's Opus goes undecoded to the room's audio thread (``media.inbound``: no
per-receiver decoder thread), which every 20 ms decodes it, mixes the talkers and hands each
participant what it hears, Opus-encoded there, as an ``av.Packet`` its sender only packetises.

Video: every video participant's frames are decoded by the room's few decoder threads
(``media.inbound.VideoDecoders``); the room's compositor thread, on its own steady clock, scales the
latest frame of each to its tile (never larger than the tile, so never above 480 lines), labels it with
the display name, composes one ``CANVAS_W`` x ``CANVAS_H`` grid and encodes it ONCE with libvpx.
The same ``av.Packet`` goes to every video receiver's track; aiortc's sender only packetises it
(its own SSRC, sequence numbers, picture id and timestamp origin). Keyframe requests (PLI/FIR)
from any receiver reach the shared encoder through a hook on the sender, and the bitrate follows the
lowest REMB among the receivers.

``video_mode="per_receiver"`` hands each receiver a raw frame instead (aiortc encodes once per
receiver): only for the benchmark's comparison.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from av.video.reformatter import VideoReformatter

from media import font, inbound, opus
from media.inbound import AudioIngest, Backlog, VideoDecoders
from media.outbound import DirectRtpSender, vp8_payloads

log = logging.getLogger("backupplus.media.mixer")

CANVAS_W, CANVAS_H = 854, 480
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms
AUDIO_PTIME = AUDIO_SAMPLES / AUDIO_RATE
VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
# The grid's bitrate follows the lowest REMB within these bounds. 1 Mbit/s at most for 854x480, as
# libwebrtc's own table allows ~1.2 Mbit/s at 960x540: more buys nothing visible on a grid of small
# tiles, and costs encoder time and packets x receivers.
MIN_BITRATE, MAX_BITRATE, DEFAULT_BITRATE = 250_000, 1_000_000, 800_000
# Talk detection: mean |sample| of a participant's 20 ms (16-bit) at or above this = talking (160 is
# Asterisk ConfBridge's default talking threshold), and still talking for 500 ms after.
TALK_THRESHOLD = 160.0
TALK_HANGOVER_TICKS = 25
MIX_DEPTH = 5  # at most this many talkers mixed at once: the loudest
LEVEL_SMOOTHING = 0.2  # the level that ranks talkers: exponential average over ~5 ticks (100 ms)
MIX_INCUMBENT_BONUS = 1.25  # a talker already mixed leaves the mix only for one 25% louder
MAX_HELD_TICKS = 3  # the compositor skips at most this many ticks in a row for a backlog (120 ms at 25 fps)
KEYFRAME_MIN_INTERVAL = 0.5  # s: a storm of PLIs from one receiver costs at most 2 keyframes/s
BLACK_Y, GREY_UV = 16, 128


def _name_os_thread(name: str) -> None:
    """Give the worker thread an OS-visible name (``top -H``, /proc/*/task/*/comm); best effort."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _to_s16(mix: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(mix, -32768), 32767).astype(np.int16).reshape(1, -1)


def _deliver_audio(out: list[tuple[AudioOutTrack, list[av.Packet]]]) -> None:
    for track, packets in out:
        track.deliver(packets)


def _drop(codec: Any, encoded: Any) -> None:
    """Where an unwanted inbound stream's frames go: nowhere, undecoded."""


class LatencyStats:
    """Server-added video latency samples (s): source frame received -> composed frame handed out."""

    def __init__(self, maxlen: int = 200_000) -> None:
        self.samples: deque[float] = deque(maxlen=maxlen)
        self.composed = 0
        self.held = 0  # compositor ticks skipped because the previous frame was still waiting to be sent
        self.received = 0  # video frames decoded from the participants
        self.compose_cpu_s = 0.0  # CPU time of the compositor thread: composing ...
        self.encode_cpu_s = 0.0  # ... and the shared encode
        self.sent: dict[str, int] = {}
        self.compose_s: deque[float] = deque(maxlen=10_000)  # wall time of one compose+encode
        self.queue_s: deque[float] = deque(maxlen=10_000)  # how late a compose started after its tick

    def percentile(self, q: float) -> float | None:
        if not self.samples:
            return None
        return float(np.percentile(np.fromiter(self.samples, dtype=float), q))


class OpusMixEncoder:
    """libopus for a mix: mono, 40 kbit/s, 20 ms, packets stamped with the room's audio clock."""

    def __init__(self, bitrate: int = 40_000) -> None:
        # "audio" (CELT at this rate), complexity 5. A mix of several voices gains nothing from
        # SILK's one-talker speech model ("voip"), which costs twice as much here (0.26 vs 0.14 ms
        # through PyAV). libopus is called directly (media.opus): 0.07 ms a frame.
        self._encoder = opus.Encoder(bitrate=bitrate, complexity=5, application="audio")

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        packet = av.Packet(self._encoder.encode(samples))
        # every receiver's sender turns the room's clock into RTP timestamps, so a participant
        # moving between its own encoder and the listeners' shared one keeps a continuous timeline
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return [packet]


class AudioOutTrack(MediaStreamTrack):
    """What one participant hears, as Opus ``av.Packet`` (the sender only packetises): encoded by
    the room's audio thread, with this participant's own encoder while they talk (the mix minus
    themselves), otherwise shared with every other listener (the same packets)."""

    kind = "audio"

    def __init__(self, bitrate: int = 40_000) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self._encoder: OpusMixEncoder | None = OpusMixEncoder(bitrate)
        self._direct: DirectRtpSender | None = None

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        """Encode 20 ms of this participant's own mix (the room's audio thread)."""
        encoder = self._encoder
        return encoder.encode(samples, pts) if encoder is not None else []

    def attach_direct(self, direct: DirectRtpSender | None) -> None:
        """From now on (``None``: no more), packets go straight out through ``direct``."""
        self._direct = direct

    def deliver(self, packets: list[av.Packet]) -> None:
        """Send encoded packets (event loop): at once through the direct sender, or queued for
        aiortc's sender task."""
        if self.readyState != "live":
            return
        direct = self._direct
        if direct is not None:
            for packet in packets:
                direct.send([bytes(packet)], packet.pts or 0)  # pts: the room's 48 kHz clock, Opus's RTP clock
            return
        for packet in packets:
            while self._queue.qsize() >= 5:  # the sender fell behind: drop the oldest 20 ms
                self._queue.get_nowait()
            self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)
        self._encoder = None  # the audio thread may be encoding with it: libopus state freed with it
        super().stop()


class VideoOutTrack(MediaStreamTrack):
    """What one video participant sees: the shared encoded grid (``av.Packet``), or a raw frame in
    per-receiver mode. ``last_sources`` tells the latency probe which source frames it carries."""

    kind = "video"

    def __init__(self, room: Room) -> None:
        super().__init__()
        self._room = room
        self._queue: asyncio.Queue[tuple[Any, list[float]] | None] = asyncio.Queue()
        self._started = False
        self.last_sources: list[float] = []
        self._direct: DirectRtpSender | None = None
        self.on_sent: Callable[[list[float]], None] | None = None  # latency probe, direct sending

    def attach_direct(self, direct: DirectRtpSender | None) -> None:
        """From now on (``None``: no more), frames go straight out through ``direct``; it starts
        with a keyframe."""
        self._direct = direct
        if direct is not None and self.readyState == "live":
            self._started = True
            self._room.request_keyframe(force=True)

    @property
    def sends_directly(self) -> bool:
        return self._direct is not None

    def send_direct(self, payloads: list[bytes], timestamp: int, sources: list[float]) -> bool:
        """Send one composed frame's payloads at once (event loop); ``False`` without a direct sender."""
        direct = self._direct
        if direct is None or self.readyState != "live":
            return False
        if direct.send(payloads, timestamp) and self.on_sent is not None:
            self.on_sent(sources)
        return True

    def push(self, item: Any, sources: list[float]) -> None:
        if self.readyState != "live" or not self._started:
            return  # nothing piles up while the connection is still being set up
        if self._queue.qsize() >= 8:
            # This receiver's sender is behind: skipping encoded frames breaks its decoder, so drop the
            # backlog and ask for a keyframe.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._room.request_keyframe()
        self._queue.put_nowait((item, sources))

    def waiting(self) -> int:
        """Frames queued for this receiver's sender and not taken yet (0 before it starts, once it
        stopped, or when it sends directly); read by the compositor thread."""
        if self.readyState != "live" or not self._started or self._direct is not None:
            return 0
        return self._queue.qsize()

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:  # the sender starts: from now on it gets frames, a keyframe first
            self._started = True
            self._room.request_keyframe(force=True)
        entry = await self._queue.get()
        if entry is None:
            raise MediaStreamError
        item, self.last_sources = entry
        return item

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()


@dataclass(eq=False)
class Member:
    pid: str
    display_name: str
    kind: str  # granted: audio | video
    joined: float = field(default_factory=time.monotonic)
    audio_out: AudioOutTrack | None = None
    video_out: VideoOutTrack | None = None
    sends_video: bool = False
    # inbound audio: mono int32 samples waiting to be mixed
    audio_buf: deque[np.ndarray] = field(default_factory=deque)
    audio_buffered: int = 0
    audio_primed: bool = False
    talk_ticks: int = 0  # > 0: talking (mixed in, hears its own mix-minus, if among the loudest)
    level: float = 0.0  # smoothed mean level of its audio: ranks the talkers when too many talk
    mixed: bool = False  # in the last tick's mix
    decode_backlog: Backlog = field(default_factory=Backlog)
    # inbound video: the latest decoded frame, its sequence number and when it arrived
    frame: av.VideoFrame | None = None
    frame_seq: int = 0
    frame_at: float = 0.0
    remb: int | None = None
    gone: bool = False  # left the room: its decoder threads skip what is still queued
    inbound: list[str] = field(default_factory=list)  # kinds of the inbound streams already tapped


class Vp8Encoder:
    """libvpx with aiortc's realtime settings (but faster: see ``_open``); rebuilt (with a keyframe) when
    the bitrate moves >10%."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.codec: Any = None
        self.bitrate = DEFAULT_BITRATE

    def _open(self, bitrate: int) -> None:
        codec: Any = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = self.width, self.height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000
        codec.qmin, codec.qmax = 2, 56
        codec.time_base = VIDEO_TIME_BASE
        codec.options = {
            "bufsize": str(bitrate),
            # aiortc uses -6. -16 (libvpx's fastest): 4.6 instead of 8.5 ms per 854x480 grid at 1 Mbit/s,
            # PSNR 39.1 instead of 39.5 dB (measured here on a 10-tile grid)
            "cpu-used": "-16",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            # aiortc's 4 runs libvpx's temporal denoiser, meant for camera noise; the grid is made of
            # pictures already decoded: 3.6 instead of 5.2-6.0 ms a frame, PSNR 38.1 instead of 37.4 dB
            # (10-tile grid of the benchmark's clips at 900 kbit/s, measured here)
            "noise-sensitivity": "0",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.thread_count = 1
        self.codec = codec
        self.bitrate = bitrate

    def encode(self, frame: av.VideoFrame, keyframe: bool, bitrate: int) -> bytes:
        if self.codec is None or abs(bitrate - self.bitrate) / self.bitrate > 0.1:
            self._open(bitrate)
            keyframe = True
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return b"".join(bytes(p) for p in self.codec.encode(frame))

    def close(self) -> None:
        self.codec = None


def grid(n: int, width: int = CANVAS_W, height: int = CANVAS_H) -> list[tuple[int, int, int, int]]:
    """Cells (x, y, w, h), even-aligned, for n tiles: as square as possible."""
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw, ch = (width // cols) & ~1, (height // rows) & ~1
    cells = []
    for i in range(n):
        r, c = divmod(i, cols)
        in_row = min(cols, n - r * cols)
        x_off = ((width - in_row * cw) // 2) & ~1  # centre a short last row
        cells.append((x_off + c * cw, r * ch, cw, ch))
    return cells


def yuv_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U, V planes of a yuv420p frame as 2-D arrays (views, line padding cut off)."""
    out = []
    for i, plane in enumerate(frame.planes):
        h, w = (frame.height, frame.width) if i == 0 else (frame.height // 2, frame.width // 2)
        arr = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        out.append(arr[:h, :w])
    return out[0], out[1], out[2]


def fit(src_w: int, src_h: int, cell_w: int, cell_h: int) -> tuple[int, int]:
    """Size (even) of a src_w x src_h picture scaled to fit the cell, keeping its aspect ratio."""
    s = min(cell_w / max(src_w, 1), cell_h / max(src_h, 1))
    return max(2, int(src_w * s) & ~1), max(2, int(src_h * s) & ~1)


class Compositor:
    """Scales the latest frame of each video sender into its tile and draws labels (worker thread)."""

    def __init__(self) -> None:
        self.buf = np.empty((CANVAS_H * 3 // 2, CANVAS_W), dtype=np.uint8)
        self.y = self.buf[:CANVAS_H]
        self.u = self.buf[CANVAS_H : CANVAS_H * 5 // 4].reshape(CANVAS_H // 2, CANVAS_W // 2)
        self.v = self.buf[CANVAS_H * 5 // 4 :].reshape(CANVAS_H // 2, CANVAS_W // 2)
        self._tiles: dict[str, tuple[int, tuple[int, int, int, int], tuple[np.ndarray, ...]]] = {}
        self._layout: tuple[str, ...] = ()
        # one swscale context per tile, kept between frames (a fresh one per call costs ~1/3 more)
        self._scalers: dict[str, VideoReformatter] = {}

    def compose(self, sources: list[tuple[str, str, av.VideoFrame | None, int]]) -> np.ndarray:
        layout = tuple(pid for pid, _, _, _ in sources)
        redraw = layout != self._layout
        if redraw:
            self._layout = layout
            self.y.fill(BLACK_Y)
            self.u.fill(GREY_UV)
            self.v.fill(GREY_UV)
            self._tiles = {k: v for k, v in self._tiles.items() if k in layout}
            self._scalers = {k: v for k, v in self._scalers.items() if k in layout}
        for (pid, name, frame, seq), cell in zip(sources, grid(len(sources))):
            cached = self._tiles.get(pid)
            if not redraw and cached is not None and cached[0] == seq and cached[1] == cell:
                continue  # unchanged tile: already on the canvas
            x, y, cw, ch = cell
            # clear the cell, then paste the scaled frame centred in it
            self.y[y : y + ch, x : x + cw] = BLACK_Y
            self.u[y // 2 : (y + ch) // 2, x // 2 : (x + cw) // 2] = GREY_UV
            self.v[y // 2 : (y + ch) // 2, x // 2 : (x + cw) // 2] = GREY_UV
            planes: tuple[np.ndarray, ...] = ()
            if frame is not None:
                tw, th = fit(frame.width, frame.height, cw, ch)
                scaler = self._scalers.get(pid)
                if scaler is None:
                    scaler = self._scalers[pid] = VideoReformatter()
                ty, tu, tv = yuv_planes(
                    scaler.reformat(frame, width=tw, height=th, format="yuv420p", interpolation="FAST_BILINEAR")
                )
                ox, oy = x + ((cw - tw) // 2 & ~1), y + ((ch - th) // 2 & ~1)
                self.y[oy : oy + th, ox : ox + tw] = ty
                self.u[oy // 2 : (oy + th) // 2, ox // 2 : (ox + tw) // 2] = tu
                self.v[oy // 2 : (oy + th) // 2, ox // 2 : (ox + tw) // 2] = tv
                planes = (ty,)
            self._label(name, x, y, cw, ch)
            self._tiles[pid] = (seq, cell, planes)
        return self.buf

    def _label(self, name: str, x: int, y: int, cw: int, ch: int) -> None:
        scale = 2 if cw >= 400 else 1
        mask = font.render(name, scale, max(0, cw - 8 * scale))
        mh, mw = mask.shape
        pad = 2 * scale
        bh, bw = (mh + 2 * pad + 1) & ~1, (mw + 2 * pad + 1) & ~1
        by, bx = y + ch - bh, x
        if by < y or bw <= 0:
            return
        self.y[by : by + bh, bx : bx + bw] = BLACK_Y
        self.u[by // 2 : (by + bh) // 2, bx // 2 : (bx + bw) // 2] = GREY_UV
        self.v[by // 2 : (by + bh) // 2, bx // 2 : (bx + bw) // 2] = GREY_UV
        region = self.y[by + pad : by + pad + mh, bx + pad : bx + pad + mw]
        region[mask[: region.shape[0], : region.shape[1]]] = 235


class Room:
    """The MCU of one conference on this node."""

    def __init__(
        self,
        conference_id: str,
        *,
        fps: float = 25.0,
        video_mode: str = "shared",
        stats: LatencyStats | None = None,
        decode_threads: int = 2,
        talk_threshold: float = TALK_THRESHOLD,
        mix_depth: int = MIX_DEPTH,
    ) -> None:
        self.conference_id = conference_id
        self.decode_threads = decode_threads
        self.fps = fps
        self.video_mode = video_mode
        self.stats = stats
        self.members: dict[str, Member] = {}
        self._audio_thread: threading.Thread | None = None
        self._audio_inbox: queue.SimpleQueue[tuple[AudioIngest, Any, Any]] = queue.SimpleQueue()
        self._audio_stop = threading.Event()
        self._audio_pts = 0  # the room's audio clock (samples): every encoder stamps its packets with it
        self._listener_encoder = OpusMixEncoder()
        self.talk_threshold = talk_threshold
        self.mix_depth = max(1, mix_depth)
        self.audio_encodes = 0  # Opus encodes so far (talkers' own + the listeners' shared one)
        self._video_thread: threading.Thread | None = None
        self._video_stop = threading.Event()
        self._picture_id = random.randrange(1 << 15)  # VP8 picture id of the shared stream
        self._video_handed = 0  # composed frames handed to the loop (written by the compositor only)
        self._video_delivered = 0  # ... and pushed to the senders by it (written by the loop only)
        self._encoder: Vp8Encoder | None = None
        self._compositor: Compositor | None = None
        self._keyframe = False
        self._last_keyframe = 0.0
        self.keyframes = 0  # shared keyframes encoded (new receivers, PLI/FIR, bitrate changes)
        self._video_wakeup = threading.Event()  # a first video receiver: the compositor starts ticking
        self._video_decoders: VideoDecoders | None = None
        self.closed = False

    # --- membership ---------------------------------------------------------------------------------
    def add(self, member: Member) -> None:
        self.members[member.pid] = member
        if self._audio_thread is None:
            self._audio_thread = self._start_worker(self._audio_worker, "audio")
        if member.video_out is not None and self._video_thread is None:
            self._video_thread = self._start_worker(self._video_worker, "compose")
        self._video_wakeup.set()

    def _start_worker(self, target: Callable[[asyncio.AbstractEventLoop], None], role: str) -> threading.Thread:
        """One of the room's threads, handed the event loop it delivers to."""
        thread = threading.Thread(
            target=target, args=(asyncio.get_running_loop(),), name=f"mcu-{self.conference_id[-6:]}-{role}", daemon=True
        )
        thread.start()
        return thread

    def remove(self, pid: str) -> Member | None:
        member = self.members.pop(pid, None)
        if member is not None:
            member.gone = True
            for track in (member.audio_out, member.video_out):
                if track is not None:
                    track.stop()
            member.frame = None  # its buffers belong to the audio and decoder threads: left to them
        return member

    def attach_inbound(self, member: Member, receiver: RTCRtpReceiver, kind: str) -> None:
        """Take over the decoding of one of the member's inbound streams (call from the pc's ``track``
        event, before the receiver starts). A second stream of a kind already tapped is dropped."""
        deliver: Callable[[Any, Any], None]
        if kind in member.inbound or (kind == "video" and member.kind != "video"):
            deliver = _drop  # e.g. an audio participant's camera: never decoded
        elif kind == "audio":
            ingest, inbox = AudioIngest(member), self._audio_inbox

            def deliver(codec: Any, encoded: Any) -> None:  # decoded on the room's audio thread
                inbox.put((ingest, codec, encoded))
        else:
            member.sends_video = True
            if self._video_decoders is None:
                self._video_decoders = VideoDecoders(
                    f"mcu-{self.conference_id[-6:]}", threads=self.decode_threads, stats=self.stats
                )
            deliver = self._video_decoders.feed_for(member, receiver)
        member.inbound.append(kind)
        inbound.install(receiver, deliver)

    async def close(self) -> None:
        self.closed = True
        for pid in list(self.members):
            self.remove(pid)
        self._video_stop.set()
        self._video_wakeup.set()
        self._audio_stop.set()
        threads = [t for t in (self._audio_thread, self._video_thread) if t is not None]
        self._audio_thread = self._video_thread = None
        for thread in threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None
        self._compositor = None
        if self._video_decoders is not None:
            decoders, self._video_decoders = self._video_decoders, None
            await asyncio.get_running_loop().run_in_executor(None, decoders.close)

    # --- audio --------------------------------------------------------------------------------------
    @staticmethod
    def _take_audio(member: Member) -> np.ndarray | None:
        if not member.audio_primed:
            if member.audio_buffered < 2 * AUDIO_SAMPLES:  # 40 ms head start against jitter
                return None
            member.audio_primed = True
        if member.audio_buffered < AUDIO_SAMPLES:
            member.audio_primed = False
            return None
        if len(member.audio_buf[0]) == AUDIO_SAMPLES:  # the usual case: one 20 ms Opus frame
            member.audio_buffered -= AUDIO_SAMPLES
            return member.audio_buf.popleft()
        out = np.empty(AUDIO_SAMPLES, dtype=np.int32)
        filled = 0
        while filled < AUDIO_SAMPLES:
            chunk = member.audio_buf[0]
            take = min(len(chunk), AUDIO_SAMPLES - filled)
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                member.audio_buf.popleft()
            else:
                member.audio_buf[0] = chunk[take:]
        member.audio_buffered -= AUDIO_SAMPLES
        return out

    def mix_once(self) -> list[tuple[AudioOutTrack, list[av.Packet]]]:
        """Decode what arrived, mix 20 ms, encode what each participant hears (the audio thread).

        Only talkers are mixed (a participant is talking while its 20 ms mean level reaches
        ``talk_threshold``, and for ``TALK_HANGOVER_TICKS`` after): 18 open microphones would
        otherwise add up 18 rooms' background noise. When more than ``mix_depth`` talk at once, only
        the loudest ``mix_depth`` are mixed (a hardware MCU's "mixing depth"): more voices at once are
        not understood anyway, and the cost of a room stays bounded whoever talks. A mixed talker hears
        the mix minus themselves, encoded for them; everyone else (a talker left out of the mix
        included) hears the whole mix, the same for all of them, so it is encoded once and the same
        packets go to every listener."""
        while True:
            try:
                ingest, codec, encoded = self._audio_inbox.get_nowait()
            except queue.Empty:
                break
            ingest(codec, encoded)
        pts = self._audio_pts
        self._audio_pts += AUDIO_SAMPLES
        members = tuple(self.members.values())  # the loop may add or remove members meanwhile
        talking: list[tuple[Member, np.ndarray]] = []
        for member in members:
            chunk = self._take_audio(member) if not member.gone else None
            if chunk is None:
                member.talk_ticks = 0
                member.level = 0.0
                continue
            level = float(np.abs(chunk).mean())
            member.level += (level - member.level) * LEVEL_SMOOTHING
            if level >= self.talk_threshold:
                member.talk_ticks = TALK_HANGOVER_TICKS
            elif member.talk_ticks > 0:
                member.talk_ticks -= 1
            if member.talk_ticks > 0:
                talking.append((member, chunk))
        if len(talking) > self.mix_depth:
            # the loudest over the last ~100 ms; those already mixed keep their place unless clearly
            # passed, so that two voices of about the same level do not swap in and out every 20 ms
            talking.sort(key=lambda mc: mc[0].level * (MIX_INCUMBENT_BONUS if mc[0].mixed else 1.0), reverse=True)
            del talking[self.mix_depth :]
        talkers = {member.pid: chunk for member, chunk in talking}
        for member in members:
            member.mixed = member.pid in talkers
        total = np.zeros(AUDIO_SAMPLES, dtype=np.int32)
        for chunk in talkers.values():
            total += chunk
        out: list[tuple[AudioOutTrack, list[av.Packet]]] = []
        shared: list[av.Packet] | None = None
        for member in members:
            track = member.audio_out
            if track is None or member.gone:
                continue
            own = talkers.get(member.pid)
            if own is not None:
                packets = track.encode(_to_s16(total - own), pts)
                self.audio_encodes += 1
            else:
                if shared is None:
                    shared = self._listener_encoder.encode(_to_s16(total), pts)
                    self.audio_encodes += 1
                packets = shared
            if packets:
                out.append((track, packets))
        return out

    def _audio_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every 20 ms: mix and encode off the event loop, then hand all packets over in one call."""
        _name_os_thread("mcu-audio")
        next_t = time.monotonic()
        while not self._audio_stop.is_set():
            try:
                out = self.mix_once()
            except Exception:  # pragma: no cover - a bad frame must not silence the room
                log.exception("audio mix of %s failed", self.conference_id)
                out = []
            if out:
                try:
                    loop.call_soon_threadsafe(_deliver_audio, out)
                except RuntimeError:  # the loop is closed: the node is gone
                    return
            next_t += AUDIO_PTIME
            delay = next_t - time.monotonic()
            if delay < -0.2:  # we were starved for a while: do not try to catch up
                next_t = time.monotonic()
                delay = 0.0
            if delay > 0:
                self._audio_stop.wait(delay)

    # --- video --------------------------------------------------------------------------------------
    def request_keyframe(self, force: bool = False) -> None:
        """Any receiver's PLI/FIR (or a new receiver): the next shared frame is a keyframe."""
        now = time.monotonic()
        if force or now - self._last_keyframe >= KEYFRAME_MIN_INTERVAL:
            self._keyframe = True

    def target_bitrate(self) -> int:
        rembs = [m.remb for m in self.members.values() if m.video_out is not None and m.remb]
        rate = min(rembs) if rembs else DEFAULT_BITRATE
        return max(MIN_BITRATE, min(MAX_BITRATE, rate))

    def _compose_encode(
        self,
        sources: list[tuple[str, str, av.VideoFrame | None, int]],
        pts: int,
        keyframe: bool,
        bitrate: int,
        due: float = 0.0,
    ) -> tuple[bytes | None, np.ndarray]:
        started = time.monotonic()
        try:
            return self._compose_encode_inner(sources, pts, keyframe, bitrate)
        finally:
            if self.stats is not None:
                self.stats.queue_s.append(started - due)
                self.stats.compose_s.append(time.monotonic() - started)

    def _compose_encode_inner(
        self,
        sources: list[tuple[str, str, av.VideoFrame | None, int]],
        pts: int,
        keyframe: bool,
        bitrate: int,
    ) -> tuple[bytes | None, np.ndarray]:
        if self._compositor is None:
            self._compositor = Compositor()
        t0 = time.thread_time()
        canvas = self._compositor.compose(sources)
        if self.video_mode != "shared":
            if self.stats is not None:
                self.stats.compose_cpu_s += time.thread_time() - t0
            return None, canvas.copy()
        if self._encoder is None:
            self._encoder = Vp8Encoder(CANVAS_W, CANVAS_H)
        frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        t1 = time.thread_time()
        data = self._encoder.encode(frame, keyframe, bitrate)
        if self.stats is not None:
            self.stats.compose_cpu_s += t1 - t0
            self.stats.encode_cpu_s += time.thread_time() - t1
        return data, canvas

    def _video_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        """The compositor thread: on its own 1/fps clock, compose the latest pictures, encode them once,
        and hand the result to the event loop in one call.

        Pacing lives here, not on the event loop: a frame costs the loop one hand-off (packets to the
        senders) instead of two (tick, then result), and a loop that lags behind its packets delays
        that frame's sending but does not lower the frame rate."""
        _name_os_thread("mcu-compose")
        period = 1.0 / self.fps
        start = time.monotonic()
        next_t = start
        last_seq: dict[str, int] = {}
        stop, wakeup = self._video_stop, self._video_wakeup
        held = 0  # ticks skipped in a row because the previous frame was still waiting to be sent
        while not stop.is_set():
            members = tuple(self.members.values())  # the loop may add or remove members meanwhile
            if not any(m.video_out is not None for m in members):
                wakeup.clear()
                if not any(m.video_out is not None for m in self.members.values()):
                    wakeup.wait()
                next_t = time.monotonic()
                continue
            if held < MAX_HELD_TICKS and self._video_backlogged(members):
                # Frames pile up behind the senders only when the event loop cannot keep up: another
                # one would wait behind them, later still. Skip this tick (fewer frames, not later ones).
                held += 1
                if self.stats is not None:
                    self.stats.held += 1
            else:
                held = 0
                composed = self._compose_tick(loop, members, start, next_t, last_seq)
                if composed is None:  # the loop is closed: the node is gone
                    return
                last_seq = composed
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:  # behind by more than a frame: skip instead of bursting
                next_t = time.monotonic()
                delay = 0.0
            if delay > 0:
                stop.wait(delay)

    def _compose_tick(
        self,
        loop: asyncio.AbstractEventLoop,
        members: tuple[Member, ...],
        start: float,
        due: float,
        last_seq: dict[str, int],
    ) -> dict[str, int] | None:
        """One tick of the compositor thread: compose, encode once, hand over to the loop. Returns each
        sender's frame sequence number now composed (``None`` if the loop is closed)."""
        senders = sorted((m for m in members if m.kind == "video" and m.sends_video), key=lambda m: (m.joined, m.pid))
        sources = [(m.pid, m.display_name, m.frame, m.frame_seq) for m in senders]
        fresh = [m.frame_at for m in senders if m.frame is not None and last_seq.get(m.pid) != m.frame_seq]
        keyframe = self._keyframe
        if keyframe:  # a request landing between these two lines is served by this keyframe
            self._keyframe = False
            self._last_keyframe = time.monotonic()
            self.keyframes += 1
        now = time.monotonic()
        pts = int((now - start) * VIDEO_CLOCK)
        try:
            data, canvas = self._compose_encode(sources, pts, keyframe, self.target_bitrate(), due)
        except Exception:  # pragma: no cover - a bad picture must not stop the room's video
            log.exception("video mixer of %s failed", self.conference_id)
            data, canvas = None, None
        if self.stats is not None:
            self.stats.composed += 1
        if data is not None or canvas is not None:
            try:
                loop.call_soon_threadsafe(self._deliver_video, data, canvas, pts, fresh)
            except RuntimeError:
                return None
            self._video_handed += 1
        return {m.pid: m.frame_seq for m in senders}

    def _video_backlogged(self, members: tuple[Member, ...]) -> bool:
        """The last composed frame has not reached every live video sender yet (compositor thread)."""
        if self._video_delivered < self._video_handed:
            return True
        return any(m.video_out is not None and m.video_out.waiting() > 0 for m in members)

    def _deliver_video(self, data: bytes | None, canvas: np.ndarray | None, pts: int, fresh: list[float]) -> None:
        """On the event loop: the composed frame to every video receiver's sender."""
        self._video_delivered += 1
        if self.video_mode == "shared":
            if data:
                payloads: list[bytes] | None = None  # packetised once for every direct sender
                packet: av.Packet | None = None
                for m in self.members.values():
                    track = m.video_out
                    if track is None:
                        continue
                    if track.sends_directly:
                        if payloads is None:
                            payloads = vp8_payloads(data, self._picture_id)
                            self._picture_id = (self._picture_id + 1) % (1 << 15)
                        track.send_direct(payloads, pts, fresh)
                        continue
                    if packet is None:
                        packet = av.Packet(data)
                        packet.pts, packet.time_base = pts, VIDEO_TIME_BASE
                    track.push(packet, fresh)
        elif canvas is not None:
            for m in self.members.values():
                if m.video_out is not None:
                    frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
                    frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
                    m.video_out.push(frame, fresh)

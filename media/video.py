"""A room's video pipeline: compose the latest pictures on a steady clock, encode the grid once, and
send the same frame to every video receiver.

The compositor thread paces itself (``fps``), so a loop that lags behind its packets delays a frame
but does not lower the frame rate, and each frame costs the loop one hand-off. It skips a tick while
the previous frame still waits for a sender (at most ``MAX_HELD_TICKS`` in a row): under overload
the grid loses frames instead of queuing them. Keyframe requests (PLI/FIR, new receivers) from any
receiver reach the one encoder, rate-limited; its bitrate follows the lowest REMB.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Any

import av
import numpy as np

from media.compositor import CANVAS_H, CANVAS_W, Compositor
from media.grid_encoder import (
    DEFAULT_BITRATE,
    MAX_BITRATE,
    MIN_BITRATE,
    VIDEO_CLOCK,
    VIDEO_TIME_BASE,
    Vp8Encoder,
)
from media.members import Member
from media.outbound import vp8_payloads
from media.stats import LatencyStats
from media.threads import name_os_thread, start_worker

log = logging.getLogger("backupplus.media.video")

MAX_HELD_TICKS = 3  # the compositor skips at most this many ticks in a row for a backlog (120 ms at 25 fps)
KEYFRAME_MIN_INTERVAL = 0.5  # s: a storm of PLIs from one receiver costs at most 2 keyframes/s

Source = tuple[str, str, av.VideoFrame | None, int]  # pid, display name, latest picture, its number


class VideoPipeline:
    """The video of a room's ``members`` (the room's own dict, read here)."""

    def __init__(
        self,
        members: dict[str, Member],
        *,
        fps: float = 25.0,
        name: str = "mcu-compose",
        stats: LatencyStats | None = None,
    ) -> None:
        self.members = members
        self.fps = fps
        self.name = name
        self.stats = stats
        self.encoder: Vp8Encoder | None = None
        self.compositor: Compositor | None = None
        self.keyframe_due = False
        self.last_keyframe_at = 0.0
        self.keyframes = 0  # shared keyframes encoded (new receivers, PLI/FIR, bitrate changes)
        self._picture_id = random.randrange(1 << 15)  # VP8 picture id of the shared stream
        self._handed = 0  # composed frames handed to the loop (written by the compositor only)
        self._delivered = 0  # ... and pushed to the senders by it (written by the loop only)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wakeup = threading.Event()  # a first video receiver: the compositor starts ticking

    # --- control (event loop) -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the compositor thread (once)."""
        if self._thread is None:
            self._thread = start_worker(self._work, self.name)

    def wake(self) -> None:
        """Members changed: an idle compositor looks again for video receivers."""
        self._wakeup.set()

    def stop(self) -> threading.Thread | None:
        """Tell the compositor thread to end; returns it for the caller to join."""
        self._stop.set()
        self._wakeup.set()
        thread, self._thread = self._thread, None
        return thread

    def release(self) -> None:
        """Free the encoder and the canvas (after the thread ended)."""
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None
        self.compositor = None

    def request_keyframe(self, force: bool = False) -> None:
        """Any receiver's PLI/FIR (or a new receiver): the next shared frame is a keyframe."""
        now = time.monotonic()
        if force or now - self.last_keyframe_at >= KEYFRAME_MIN_INTERVAL:
            self.keyframe_due = True

    def target_bitrate(self) -> int:
        rembs = [m.remb for m in self.members.values() if m.video_out is not None and m.remb]
        rate = min(rembs) if rembs else DEFAULT_BITRATE
        return max(MIN_BITRATE, min(MAX_BITRATE, rate))

    # --- the compositor thread ----------------------------------------------------------------------
    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """On its own 1/fps clock: compose the latest pictures, encode them once, hand the result to the
        event loop in one call."""
        name_os_thread("mcu-compose")
        period = 1.0 / self.fps
        start = time.monotonic()
        next_t = start
        last_seq: dict[str, int] = {}
        stop, wakeup = self._stop, self._wakeup
        held = 0  # ticks skipped in a row because the previous frame was still waiting to be sent
        while not stop.is_set():
            members = tuple(self.members.values())  # the loop may add or remove members meanwhile
            if not any(m.video_out is not None for m in members):
                wakeup.clear()
                if not any(m.video_out is not None for m in self.members.values()):
                    wakeup.wait()
                next_t = time.monotonic()
                continue
            if held < MAX_HELD_TICKS and self._backlogged(members):
                # Frames pile up behind the senders only when the event loop cannot keep up: another
                # one would wait behind them, later still. Skip this tick (fewer frames, not later ones).
                held += 1
                if self.stats is not None:
                    self.stats.held += 1
            else:
                held = 0
                composed = self._tick(loop, members, start, next_t, last_seq)
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

    def _tick(
        self,
        loop: asyncio.AbstractEventLoop,
        members: tuple[Member, ...],
        start: float,
        due: float,
        last_seq: dict[str, int],
    ) -> dict[str, int] | None:
        """Compose, encode once, hand over to the loop. Returns each sender's frame sequence number now
        composed (``None`` if the loop is closed)."""
        senders = sorted((m for m in members if m.kind == "video" and m.sends_video), key=lambda m: (m.joined, m.pid))
        sources = [(m.pid, m.display_name, m.frame, m.frame_seq) for m in senders]
        fresh = [m.frame_at for m in senders if m.frame is not None and last_seq.get(m.pid) != m.frame_seq]
        keyframe = self.keyframe_due
        if keyframe:  # a request landing between these two lines is served by this keyframe
            self.keyframe_due = False
            self.last_keyframe_at = time.monotonic()
            self.keyframes += 1
        now = time.monotonic()
        pts = int((now - start) * VIDEO_CLOCK)
        try:
            output = self._compose_encode(sources, pts, keyframe, self.target_bitrate(), due)
        except Exception:  # pragma: no cover - a bad picture must not stop the room's video
            log.exception("video of %s failed", self.name)
            output = None
        if self.stats is not None:
            self.stats.composed += 1
        if output is not None:
            try:
                loop.call_soon_threadsafe(self._deliver, output, pts, fresh)
            except RuntimeError:
                return None
            self._handed += 1
        return {m.pid: m.frame_seq for m in senders}

    def _compose_encode(
        self, sources: list[Source], pts: int, keyframe: bool, bitrate: int, due: float
    ) -> Any:
        started = time.monotonic()
        try:
            if self.compositor is None:
                self.compositor = Compositor()
            composing_since = time.thread_time()
            canvas = self.compositor.compose(sources)
            return self._encode(canvas, pts, keyframe, bitrate, composing_since)
        finally:
            if self.stats is not None:
                self.stats.queue_s.append(started - due)
                self.stats.compose_s.append(time.monotonic() - started)

    def _encode(
        self, canvas: np.ndarray, pts: int, keyframe: bool, bitrate: int, composing_since: float
    ) -> Any:
        """What the loop gets for one composed canvas: the grid encoded once (compositor thread)."""
        if self.encoder is None:
            self.encoder = Vp8Encoder(CANVAS_W, CANVAS_H)
        frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        encoding_since = time.thread_time()
        data = self.encoder.encode(frame, keyframe, bitrate)
        if self.stats is not None:
            self.stats.compose_cpu_s += encoding_since - composing_since
            self.stats.encode_cpu_s += time.thread_time() - encoding_since
        return data

    def _backlogged(self, members: tuple[Member, ...]) -> bool:
        """The last composed frame has not reached every live video sender yet (compositor thread)."""
        if self._delivered < self._handed:
            return True
        return any(m.video_out is not None and m.video_out.waiting() > 0 for m in members)

    # --- the event loop -----------------------------------------------------------------------------
    def _deliver(self, output: Any, pts: int, fresh: list[float]) -> None:
        self._delivered += 1
        self._send(output, pts, fresh)

    def _send(self, data: Any, pts: int, fresh: list[float]) -> None:
        """The encoded grid to every video receiver: packetised once for all the direct senders, one
        ``av.Packet`` for the others."""
        if not data:
            return
        payloads: list[bytes] | None = None
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

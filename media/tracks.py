"""The outgoing tracks of a participant: what it hears and what it sees, already encoded by its room.

Both hand aiortc's sender ``av.Packet`` (the sender only packetises), or send straight through a
``media.outbound.DirectRtpSender`` once one is attached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.mix_encoder import OpusMixEncoder
from media.outbound import DirectRtpSender


class KeyframeSource(Protocol):
    """Whoever encodes a video track's frames (the room): asked for a keyframe."""

    def request_keyframe(self, force: bool = False) -> None: ...


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
    """What one video participant sees: the room's encoded grid (``av.Packet``; the benchmark's
    per-receiver mode pushes raw frames). ``last_sources`` tells the latency probe which source frames
    it carries."""

    kind = "video"

    def __init__(self, room: KeyframeSource) -> None:
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

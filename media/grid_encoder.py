"""The VP8 encoder of a room's grid: one encode per composed frame, shared by every video receiver.

libvpx with aiortc's realtime CBR settings, but faster (``cpu-used -16``) and without the temporal
denoiser meant for camera noise (the grid is made of pictures already decoded); figures in
docs/MEDIA.md. Rebuilt, with a keyframe, when the bitrate moves by more than 10%.
"""

from __future__ import annotations

import fractions
from typing import Any

import av

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
# The grid's bitrate follows the lowest REMB within these bounds: 1 Mbit/s at most for 854x480 (about
# libwebrtc's own table at 960x540); more buys nothing visible on a grid of small tiles, and costs
# encoder time and packets for every receiver.
MIN_BITRATE, MAX_BITRATE, DEFAULT_BITRATE = 250_000, 1_000_000, 800_000


class Vp8Encoder:
    """libvpx for one ``width`` x ``height`` stream, on the calling thread."""

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
            "cpu-used": "-16",  # libvpx's fastest (aiortc: -6)
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "noise-sensitivity": "0",  # no temporal denoiser (aiortc: 4)
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

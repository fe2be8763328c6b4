"""media.grid_encoder: one VP8 stream of the grid; a keyframe when asked and when the bitrate moves
by more than 10% (the codec is rebuilt), not otherwise. Real libvpx."""

from __future__ import annotations

import av
import numpy as np
import pytest

from media.compositor import CANVAS_H, CANVAS_W
from media.grid_encoder import DEFAULT_BITRATE, VIDEO_TIME_BASE, Vp8Encoder
from media.inbound import is_vp8_keyframe

pytestmark = pytest.mark.media


def frame(n: int) -> av.VideoFrame:
    picture = np.full((CANVAS_H * 3 // 2, CANVAS_W), 16 + (n * 7) % 200, dtype=np.uint8)
    f = av.VideoFrame.from_ndarray(picture, format="yuv420p")
    f.pts, f.time_base = n * 3600, VIDEO_TIME_BASE
    return f


def test_keyframes_on_request_and_on_a_bitrate_move() -> None:
    encoder = Vp8Encoder(CANVAS_W, CANVAS_H)
    try:
        first = encoder.encode(frame(0), False, DEFAULT_BITRATE)
        assert first and is_vp8_keyframe(first)  # the codec opens with a keyframe
        assert not is_vp8_keyframe(encoder.encode(frame(1), False, DEFAULT_BITRATE))
        assert is_vp8_keyframe(encoder.encode(frame(2), True, DEFAULT_BITRATE))
        assert not is_vp8_keyframe(encoder.encode(frame(3), False, int(DEFAULT_BITRATE * 1.05)))  # < 10%
        assert encoder.bitrate == DEFAULT_BITRATE
        assert is_vp8_keyframe(encoder.encode(frame(4), False, DEFAULT_BITRATE // 2))  # rebuilt
        assert encoder.bitrate == DEFAULT_BITRATE // 2
    finally:
        encoder.close()
    assert encoder.codec is None

"""A participant as its room sees it: its outgoing tracks, its audio waiting to be mixed, its latest
decoded picture, and the backlog of its video decoder."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import av
import numpy as np

from media.tracks import AudioOutTrack, VideoOutTrack


class Backlog:
    """One video sender's decode queue depth, as two counters with one writer each (``queued`` by
    the event loop, ``done`` by the decoder thread): no lock needed."""

    __slots__ = ("done", "dropped", "queued", "skipping")

    def __init__(self) -> None:
        self.queued = self.done = self.dropped = 0
        self.skipping = False


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

"""One conference's MCU: its members, its audio mix (``media.audio_mix``), its video pipeline
(``media.video``) and the decoding of what its members send (``media.inbound``).

Every participant's Opus goes undecoded to the audio thread, which decodes, mixes and encodes what
each one hears. Video senders' frames are decoded by the room's few decoder threads; the compositor
thread composes and encodes one grid for every video receiver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver

from media import inbound
from media.audio_mix import AudioMixer
from media.inbound import VideoDecoders
from media.members import Member
from media.video import VideoPipeline

DECODE_THREADS = 2  # video decoder threads per conference (made on the first video sender)


class Room:
    """The MCU of one conference on this node. Its pipelines are made by ``_new_video`` and
    ``_new_decoders``: the benchmark's room (benchmarks/media_node_bench.py) overrides them with its
    probes and modes; the production room has no switch of its own."""

    def __init__(self, conference_id: str, *, fps: float = 25.0) -> None:
        self.conference_id = conference_id
        self.members: dict[str, Member] = {}
        prefix = f"mcu-{conference_id[-6:]}"
        self.prefix = prefix
        self.audio = AudioMixer(self.members, name=f"{prefix}-audio")
        self.video = self._new_video(fps)
        self._video_decoders: VideoDecoders | None = None
        self.closed = False

    def _new_video(self, fps: float) -> VideoPipeline:
        return VideoPipeline(self.members, fps=fps, name=f"{self.prefix}-compose")

    def _new_decoders(self) -> VideoDecoders:
        return VideoDecoders(self.prefix, threads=DECODE_THREADS)

    def add(self, member: Member) -> None:
        self.members[member.pid] = member
        self.audio.start()
        if member.video_out is not None:
            self.video.start()
        self.video.wake()

    def remove(self, pid: str) -> Member | None:
        member = self.members.pop(pid, None)
        if member is not None:
            member.gone = True
            for track in (member.audio_out, member.video_out):
                if track is not None:
                    track.stop()
            member.frame = None  # its buffers belong to the audio and decoder threads: left to them
        return member

    def request_keyframe(self, force: bool = False) -> None:
        """Any receiver's PLI/FIR (or a new receiver): the next shared frame is a keyframe."""
        self.video.request_keyframe(force)

    def attach_inbound(self, member: Member, receiver: RTCRtpReceiver, kind: str) -> None:
        """Take over the decoding of one of the member's inbound streams (call from the pc's ``track``
        event, before the receiver starts). A second stream of a kind already tapped is dropped."""
        deliver: Callable[[Any, Any], None]
        if kind in member.inbound or (kind == "video" and member.kind != "video"):
            deliver = inbound.drop  # e.g. an audio participant's camera: never decoded
        elif kind == "audio":
            deliver = self.audio.feed_for(member)
        else:
            member.sends_video = True
            if self._video_decoders is None:
                self._video_decoders = self._new_decoders()
            deliver = self._video_decoders.feed_for(member, receiver)
        member.inbound.append(kind)
        inbound.install(receiver, deliver)

    async def close(self) -> None:
        self.closed = True
        for pid in list(self.members):
            self.remove(pid)
        video_thread = self.video.stop()
        threads = [t for t in (self.audio.stop(), video_thread) if t is not None]
        loop = asyncio.get_running_loop()
        for thread in threads:
            await loop.run_in_executor(None, thread.join)
        self.video.release()
        if self._video_decoders is not None:
            decoders, self._video_decoders = self._video_decoders, None
            await loop.run_in_executor(None, decoders.close)
